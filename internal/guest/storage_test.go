package guest

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	agent "github.com/hullrt/hull/api/agent/v1"
)

func blkStorage(mut func(*agent.Storage)) *agent.Storage {
	s := &agent.Storage{
		Driver: agent.DriverBlk, Source: "hull0123456789abcdef", Fstype: "ext4",
		MountPoint: agent.StorageDir + "/c1/rootfs",
	}
	if mut != nil {
		mut(s)
	}
	return s
}

func TestCheckBlockStorage(t *testing.T) {
	tests := []struct {
		name  string
		mut   func(*agent.Storage)
		flags uintptr
		data  string
		err   string // "" for valid
	}{
		{name: "rootfs", mut: nil},
		{name: "read-only xfs", mut: func(s *agent.Storage) { s.Fstype = "xfs"; s.Options = []string{"ro", "nouuid", "noatime"} },
			flags: unix.MS_RDONLY | unix.MS_NOATIME, data: "nouuid"},
		{name: "deeper mount point", mut: func(s *agent.Storage) { s.MountPoint = agent.StorageDir + "/c1/data/x" }},
		{name: "shared fs driver", mut: func(s *agent.Storage) { s.Driver = "" }, err: "driver"},
		{name: "unknown driver", mut: func(s *agent.Storage) { s.Driver = "scsi" }, err: "driver"},
		{name: "long serial", mut: func(s *agent.Storage) { s.Source = "hull0123456789abcdef0" }, err: "serial"},
		{name: "empty serial", mut: func(s *agent.Storage) { s.Source = "" }, err: "serial"},
		{name: "serial as a path", mut: func(s *agent.Storage) { s.Source = "/dev/vda" }, err: "serial"},
		{name: "serial with a glob", mut: func(s *agent.Storage) { s.Source = "hull*" }, err: "serial"},
		{name: "fs not for disks", mut: func(s *agent.Storage) { s.Fstype = "tmpfs" }, err: "filesystem"},
		{name: "fs by auto", mut: func(s *agent.Storage) { s.Fstype = "" }, err: "filesystem"},
		{name: "other container's dir", mut: func(s *agent.Storage) { s.MountPoint = agent.StorageDir + "/c2/rootfs" }, err: "not below"},
		{name: "prefix of another id", mut: func(s *agent.Storage) { s.MountPoint = agent.StorageDir + "/c10/rootfs" }, err: "not below"},
		{name: "the container dir itself", mut: func(s *agent.Storage) { s.MountPoint = agent.StorageDir + "/c1" }, err: "not below"},
		{name: "escape by dots", mut: func(s *agent.Storage) { s.MountPoint = agent.StorageDir + "/c1/../../../sbin" }, err: "not below"},
		{name: "agent's files", mut: func(s *agent.Storage) { s.MountPoint = "/run/hull/shared" }, err: "not below"},
		{name: "relative", mut: func(s *agent.Storage) { s.MountPoint = "c1/rootfs" }, err: "not below"},
		{name: "unknown option", mut: func(s *agent.Storage) { s.Options = []string{"errors=panic"} }, err: "option"},
		{name: "bind option", mut: func(s *agent.Storage) { s.Options = []string{"bind"} }, err: "option"},
		{name: "injected data", mut: func(s *agent.Storage) { s.Options = []string{"discard,dax"} }, err: "option"},
	}
	for _, tt := range tests {
		flags, data, err := checkBlockStorage("c1", blkStorage(tt.mut))
		switch {
		case tt.err == "" && err != nil:
			t.Errorf("%s: %v", tt.name, err)
		case tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err)):
			t.Errorf("%s: error %v, want one about %q", tt.name, err, tt.err)
		case tt.err == "" && (flags != tt.flags || data != tt.data):
			t.Errorf("%s: flags %#x data %q, want %#x %q", tt.name, flags, data, tt.flags, tt.data)
		}
	}
}

func TestPrepareStoragesRefusesBadInput(t *testing.T) {
	ctx := context.Background()
	if ms, err := prepareStorages(ctx, "../c1", []*agent.Storage{blkStorage(nil)}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("bad container id: %v %v", ms, err)
	}
	bad := blkStorage(func(s *agent.Storage) { s.MountPoint = "/sbin" })
	if _, err := prepareStorages(ctx, "c1", []*agent.Storage{blkStorage(nil), bad}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("one bad storage of two: %v", err)
	}
	if ms, err := prepareStorages(ctx, "../anything", nil); err != nil || ms != nil {
		t.Errorf("no storages: %v %v", ms, err)
	}
}

// fakeDisks lays out /sys/block and /dev with the given disks (name ->
// serial); their device nodes stand in as links to /dev/null.
func fakeDisks(t *testing.T, disks map[string]string) {
	t.Helper()
	root := t.TempDir()
	oldSys, oldDev := sysBlock, devDir
	sysBlock, devDir = filepath.Join(root, "sys/block"), filepath.Join(root, "dev")
	t.Cleanup(func() { sysBlock, devDir = oldSys, oldDev })
	for _, d := range []string{sysBlock, devDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for name, serial := range disks {
		if err := addDisk(sysBlock, devDir, name, serial); err != nil {
			t.Fatal(err)
		}
	}
}

func addDisk(sys, dev, name, serial string) error {
	if err := os.MkdirAll(filepath.Join(sys, name), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(sys, name, "serial"), []byte(serial), 0o644); err != nil {
		return err
	}
	return os.Symlink("/dev/null", filepath.Join(dev, name))
}

func TestFindDisk(t *testing.T) {
	fakeDisks(t, map[string]string{"vda": "hull-other", "vdb": "hull-mine"})
	// A disk that is listed but has no node yet is not found.
	if err := os.MkdirAll(filepath.Join(sysBlock, "vdc"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(sysBlock, "vdc", "serial"), []byte("hull-late\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if dev, err := findDisk(ctx, "hull-mine"); err != nil || dev != filepath.Join(devDir, "vdb") {
		t.Fatalf("findDisk = %q, %v", dev, err)
	}
	short, cancelShort := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancelShort()
	if _, err := findDisk(short, "hull-late"); status.Code(err) != codes.DeadlineExceeded {
		t.Errorf("disk without a node: %v", err)
	}
	// A disk plugged while the agent waits is found.
	plugged := make(chan error, 1)
	go func(sys, dev string) {
		time.Sleep(30 * time.Millisecond)
		plugged <- addDisk(sys, dev, "vdd", "hull-hotplug")
	}(sysBlock, devDir)
	dev, err := findDisk(ctx, "hull-hotplug")
	if perr := <-plugged; perr != nil {
		t.Fatal(perr)
	}
	if err != nil || dev != filepath.Join(devDir, "vdd") {
		t.Fatalf("hot-plugged disk: %q, %v", dev, err)
	}
	ms, err := prepareStorages(ctx, "c1", []*agent.Storage{blkStorage(func(s *agent.Storage) { s.Source = "hull-mine" })})
	if err != nil || len(ms) != 1 || ms[0].dev != filepath.Join(devDir, "vdb") || ms[0].target != agent.StorageDir+"/c1/rootfs" {
		t.Fatalf("prepareStorages = %+v, %v", ms, err)
	}
}

// The sandbox's storages are shared filesystems: a disk there is refused
// before anything is mounted.
func TestSandboxStorageTakesNoDisk(t *testing.T) {
	err := mountStorage(&agent.Storage{Driver: agent.DriverBlk, Source: "hull-a", Fstype: "ext4", MountPoint: filepath.Join(t.TempDir(), "m")})
	if status.Code(err) != codes.InvalidArgument {
		t.Errorf("disk as a sandbox storage: %v", err)
	}
}
