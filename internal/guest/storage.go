package guest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	agent "github.com/hullrt/hull/api/agent/v1"
)

// A container's own storages: disks the host hot-plugged for it (its root
// filesystem on a block device), mounted below agent.StorageDir/<id>/.
// What the host asks is checked before anything is mounted: the host is
// trusted with the VM, but a mistake there must not mount over the
// agent's own files.

// sysBlock is where the kernel lists block devices; a variable so that
// the tests can give it a directory of their own.
var sysBlock = "/sys/block"

// devDir holds the device nodes (devtmpfs).
var devDir = "/dev"

// diskPoll is how often a storage waits for its hot-plugged disk.
const diskPoll = 5 * time.Millisecond

var (
	// libcontainer's rule for container ids.
	containerIDRE = regexp.MustCompile(`^[\w+.-]+$`)
	serialRE      = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)
)

// Mount options a block storage may carry: flags, and the data options
// passed to the filesystem as they are.
var (
	mountFlags = map[string]uintptr{
		"ro": unix.MS_RDONLY, "rw": 0,
		"nosuid": unix.MS_NOSUID, "nodev": unix.MS_NODEV, "noexec": unix.MS_NOEXEC,
		"noatime": unix.MS_NOATIME, "nodiratime": unix.MS_NODIRATIME,
		"relatime": unix.MS_RELATIME, "strictatime": unix.MS_STRICTATIME,
		"sync": unix.MS_SYNCHRONOUS, "dirsync": unix.MS_DIRSYNC,
	}
	mountData = map[string]bool{"discard": true, "nodiscard": true, "nouuid": true}
)

func validContainerID(id string) bool {
	return containerIDRE.MatchString(id) && id != "." && id != ".." && len(id) <= 1024
}

// checkBlockStorage validates a storage of container id, and returns the
// mount flags and data its options ask for.
func checkBlockStorage(id string, s *agent.Storage) (uintptr, string, error) {
	if s.Driver != agent.DriverBlk {
		return 0, "", fmt.Errorf("storage driver %q: containers only take %q storages", s.Driver, agent.DriverBlk)
	}
	if len(s.Source) > agent.MaxBlkSerial || !serialRE.MatchString(s.Source) {
		return 0, "", fmt.Errorf("invalid disk serial %q", s.Source)
	}
	known := false
	for _, fs := range agent.BlockFilesystems {
		known = known || s.Fstype == fs
	}
	if !known {
		return 0, "", fmt.Errorf("filesystem %q on a disk: want one of %s", s.Fstype, strings.Join(agent.BlockFilesystems, ", "))
	}
	dir := filepath.Join(agent.StorageDir, id)
	if filepath.Clean(s.MountPoint) != s.MountPoint || !strings.HasPrefix(s.MountPoint, dir+"/") {
		return 0, "", fmt.Errorf("storage mount point %q is not below %s", s.MountPoint, dir)
	}
	var flags uintptr
	var data []string
	for _, o := range s.Options {
		if f, ok := mountFlags[o]; ok {
			flags |= f
		} else if mountData[o] {
			data = append(data, o)
		} else {
			return 0, "", fmt.Errorf("mount option %q is not allowed on a disk", o)
		}
	}
	return flags, strings.Join(data, ","), nil
}

// blockMount is a checked storage whose disk is in the guest.
type blockMount struct {
	dev, target, fstype string
	flags               uintptr
	data                string
}

// prepareStorages checks the storages the host asks for container id and
// waits, within ctx, for their disks to appear.
func prepareStorages(ctx context.Context, id string, storages []*agent.Storage) ([]blockMount, error) {
	if len(storages) == 0 {
		return nil, nil
	}
	if !validContainerID(id) {
		return nil, status.Errorf(codes.InvalidArgument, "invalid container id %q", id)
	}
	ms := make([]blockMount, len(storages))
	for i, s := range storages {
		flags, data, err := checkBlockStorage(id, s)
		if err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "container %s: %v", id, err)
		}
		ms[i] = blockMount{target: s.MountPoint, fstype: s.Fstype, flags: flags, data: data}
	}
	for i, s := range storages {
		dev, err := findDisk(ctx, s.Source)
		if err != nil {
			return nil, err
		}
		ms[i].dev = dev
	}
	return ms, nil
}

// mountStorages mounts the storages of container id, all or none, and
// returns their mount points in mount order.
func mountStorages(id string, ms []blockMount) ([]string, error) {
	var mounted []string
	for _, m := range ms {
		err := os.MkdirAll(m.target, 0o755)
		if err == nil {
			err = unix.Mount(m.dev, m.target, m.fstype, m.flags, m.data)
		}
		if err != nil {
			unmountStorages(id, mounted)
			return nil, status.Errorf(codes.FailedPrecondition, "container %s: mounting %s %s on %s: %v", id, m.fstype, m.dev, m.target, err)
		}
		mounted = append(mounted, m.target)
	}
	return mounted, nil
}

// findDisk waits until the virtio-blk disk with serial is in the guest and
// returns its device node.
func findDisk(ctx context.Context, serial string) (string, error) {
	for {
		dev, err := diskBySerial(serial)
		if err != nil {
			return "", status.Errorf(codes.Internal, "looking for disk %s: %v", serial, err)
		}
		if dev != "" {
			return dev, nil
		}
		select {
		case <-ctx.Done():
			return "", status.Errorf(codes.DeadlineExceeded, "no disk with serial %s appeared in the guest", serial)
		case <-time.After(diskPoll):
		}
	}
}

// diskBySerial is the device node of the virtio-blk disk with serial, or
// "" while there is none (or its node is not there yet).
func diskBySerial(serial string) (string, error) {
	files, err := filepath.Glob(filepath.Join(sysBlock, "vd*", "serial"))
	if err != nil {
		return "", err
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil || strings.TrimSpace(string(b)) != serial {
			continue // a disk going away, or another one
		}
		dev := filepath.Join(devDir, filepath.Base(filepath.Dir(f)))
		if fi, err := os.Stat(dev); err == nil && fi.Mode()&os.ModeDevice != 0 {
			return dev, nil
		}
	}
	return "", nil
}

// unmountStorages unmounts the storages of container id, last first, and
// removes their mount points. A plain unmount writes the filesystem back
// to the disk before the host unplugs it; a lazy one is the fallback
// for a mount that something still holds.
func unmountStorages(id string, mounts []string) {
	for i := len(mounts) - 1; i >= 0; i-- {
		mp := mounts[i]
		if err := unix.Unmount(mp, 0); err != nil && !errors.Is(err, unix.EINVAL) {
			logrus.WithError(err).Warnf("unmounting %s, detaching it", mp)
			if err := unix.Unmount(mp, unix.MNT_DETACH); err != nil {
				logrus.WithError(err).Warnf("detaching %s", mp)
			}
		}
		_ = os.Remove(mp)
	}
	if len(mounts) > 0 {
		_ = os.Remove(filepath.Join(agent.StorageDir, id))
	}
}

// virtiofsReadAheadKiB is the read-ahead of the virtio-fs share. A FUSE
// request to virtiofsd carries up to 1 MiB, but the kernel's default
// window is 128 KiB, so running a 2 MB binary from the share took ~18
// round trips through virtiofsd and one does it in 2-4. It is paid by the
// first exec of a binary, and again after the host changes it: the share
// keeps a file's pages across opens (docs/design/004-shared-rootfs.md).
const virtiofsReadAheadKiB = 1024

// setReadAhead sets the read-ahead window of the filesystem mounted at dir,
// which is its backing device's (a FUSE connection has one of its own).
//
// mount(2) of virtio-fs returns before the daemon has answered FUSE_INIT,
// and the answer lowers the window to the daemon's max_readahead, which is
// the 128 KiB default the kernel offered. A window set before that answer
// is therefore undone. AT_STATX_FORCE_SYNC makes the statx a GETATTR,
// which FUSE holds until the connection is initialised, so the write
// below comes after the answer.
func setReadAhead(dir string, kib int) error {
	var st unix.Statx_t
	if err := unix.Statx(unix.AT_FDCWD, dir, unix.AT_STATX_FORCE_SYNC, 0, &st); err != nil {
		return err
	}
	p := fmt.Sprintf("/sys/class/bdi/%d:%d/read_ahead_kb", st.Dev_major, st.Dev_minor)
	return os.WriteFile(p, []byte(strconv.Itoa(kib)), 0o644)
}
