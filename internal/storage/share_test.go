package storage

import (
	"bufio"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

func TestParseMountsUnder(t *testing.T) {
	mountinfo := `22 1 0:21 / / rw - ext4 /dev/vda rw
30 22 0:25 / /run rw - tmpfs tmpfs rw
41 30 0:30 / /run/hull/c1/shared/c1/rootfs rw - ext4 /dev/vda rw
42 41 0:31 / /run/hull/c1/shared/c1/rootfs/proc rw - proc proc rw
43 30 0:32 / /run/hull/c10/shared rw - tmpfs tmpfs rw
44 30 0:33 / /run/hull/c1/shared/with\040space rw - tmpfs tmpfs rw
`
	got, err := parseMountsUnder(bufio.NewScanner(strings.NewReader(mountinfo)), "/run/hull/c1/shared/")
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"/run/hull/c1/shared/c1/rootfs/proc",
		"/run/hull/c1/shared/with space",
		"/run/hull/c1/shared/c1/rootfs",
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %q, want %q", got, want)
	}
}

func TestUnescapeMountPath(t *testing.T) {
	for in, want := range map[string]string{
		`/plain`:          "/plain",
		`/a\040b`:         "/a b",
		`/tab\011x`:       "/tab\tx",
		`/back\134slash`:  `/back\slash`,
		`/not\0octal\9xx`: `/not\0octal\9xx`,
	} {
		if got := unescapeMountPath(in); got != want {
			t.Errorf("unescape(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestIsBind(t *testing.T) {
	tests := []struct {
		m    specs.Mount
		want bool
	}{
		{specs.Mount{Destination: "/etc/hosts", Type: "bind", Source: "/h", Options: []string{"rprivate"}}, true},
		{specs.Mount{Destination: "/data", Source: "/d", Options: []string{"rbind", "ro"}}, true},
		{specs.Mount{Destination: "/data", Type: "none", Source: "/d", Options: []string{"bind"}}, true},
		{specs.Mount{Destination: "/proc", Type: "proc", Source: "proc"}, false},
		{specs.Mount{Destination: "/dev", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid"}}, false},
	}
	for _, tt := range tests {
		if got := isBind(tt.m); got != tt.want {
			t.Errorf("isBind(%+v) = %v, want %v", tt.m, got, tt.want)
		}
	}
}

func TestRemoveMounted(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mounting a tmpfs needs root")
	}
	dir := t.TempDir()
	mnt := filepath.Join(dir, "state", "runsc", "null-netns")
	if err := os.MkdirAll(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("tmpfs", mnt, "tmpfs", 0, ""); err != nil {
		t.Skipf("cannot mount a tmpfs here: %v", err)
	}
	if got, err := MountsUnder(dir); err != nil || len(got) != 1 || got[0] != mnt {
		_ = unix.Unmount(mnt, unix.MNT_DETACH)
		t.Fatalf("MountsUnder = %v, %v; want [%s]", got, err, mnt)
	}
	if err := RemoveMounted(dir, "scratch dir"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("%s still there: %v", dir, err)
	}
	if got, _ := MountsUnder(dir); len(got) != 0 {
		t.Errorf("mounts left: %v", got)
	}
}
