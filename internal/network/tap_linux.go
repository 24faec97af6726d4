package network

import (
	"fmt"
	"os"
	"runtime"
	"unsafe"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// openTap creates the tap device name in the namespace ns and returns its
// file descriptor. The device is not persistent: it goes away when the last
// descriptor is closed. /dev/net/tun binds a device to the namespace of the
// thread that creates it, so this runs on a locked thread moved into ns.
func openTap(ns netns.NsHandle, name string) (*os.File, error) {
	if len(name) >= unix.IFNAMSIZ {
		return nil, fmt.Errorf("tap name %q too long", name)
	}
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		return nil, err
	}
	defer orig.Close()
	if err := netns.Set(ns); err != nil {
		runtime.UnlockOSThread()
		return nil, fmt.Errorf("entering network namespace: %w", err)
	}
	f, openErr := createTap(name)
	if err := netns.Set(orig); err != nil {
		// The thread is stuck in the wrong namespace: leave it locked, so
		// that it dies with this goroutine instead of running others.
		if f != nil {
			f.Close()
		}
		return nil, fmt.Errorf("leaving network namespace: %w", err)
	}
	runtime.UnlockOSThread()
	return f, openErr
}

func createTap(name string) (*os.File, error) {
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("opening /dev/net/tun: %w", err)
	}
	var req struct {
		name  [unix.IFNAMSIZ]byte
		flags uint16
		_     [22]byte
	}
	copy(req.name[:], name)
	req.flags = unix.IFF_TAP | unix.IFF_NO_PI | unix.IFF_VNET_HDR
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.TUNSETIFF, uintptr(unsafe.Pointer(&req))); errno != 0 {
		unix.Close(fd)
		return nil, fmt.Errorf("TUNSETIFF %s: %w", name, errno)
	}
	return os.NewFile(uintptr(fd), "/dev/net/tun:"+name), nil
}
