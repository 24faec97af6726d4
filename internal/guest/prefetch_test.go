package guest

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

func TestEntrypointCandidates(t *testing.T) {
	tests := []struct {
		name string
		p    specs.Process
		want []string
	}{
		{"absolute", specs.Process{Args: []string{"/bin/true"}}, []string{"/bin/true"}},
		{"relative to cwd", specs.Process{Args: []string{"./run.sh"}, Cwd: "/app"}, []string{"/app/run.sh"}},
		{"its PATH, relative entries skipped", specs.Process{Args: []string{"sh"}, Env: []string{"A=1", "PATH=/opt/bin:bin:/bin"}},
			[]string{"/opt/bin/sh", "/bin/sh"}},
		{"no PATH", specs.Process{Args: []string{"true"}},
			[]string{"/usr/local/sbin/true", "/usr/local/bin/true", "/usr/sbin/true", "/usr/bin/true", "/sbin/true", "/bin/true"}},
		{"empty name", specs.Process{Args: []string{""}}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := entrypointCandidates(&tt.p); !slices.Equal(got, tt.want) {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

// The rootfs is the container's: prefetch reads regular files inside it
// only, and never opens anything else.
func TestPrefetchStaysInRootAndOnRegularFiles(t *testing.T) {
	root := t.TempDir()
	outside := filepath.Join(t.TempDir(), "secret")
	for name, size := range map[string]int64{outside: 4096, filepath.Join(root, "bin/small"): 3000, filepath.Join(root, "bin/big"): prefetchMax + 1} {
		if err := os.MkdirAll(filepath.Dir(name), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(name, nil, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(name, size); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink(outside, filepath.Join(root, "bin/escape")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("small", filepath.Join(root, "bin/link")); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mkfifo(filepath.Join(root, "bin/fifo"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		path string
		n    int64
		err  error
	}{
		{"/bin/small", 3000, nil},
		{"/bin/link", 3000, nil},
		{"/bin/big", prefetchMax, nil},
		{"/bin/escape", 0, os.ErrNotExist}, // resolved inside root, where it is not
		{"/../../bin/small", 3000, nil},    // .. stops at root
		{"/bin/fifo", 0, errNotRegular},    // opening it would block
		{"/bin/missing", 0, os.ErrNotExist},
	} {
		n, err := prefetch(root, tt.path)
		if n != tt.n || !errors.Is(err, tt.err) {
			t.Errorf("prefetch(%s) = %d, %v; want %d, %v", tt.path, n, err, tt.n, tt.err)
		}
	}
}
