package guest

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// waitHost must hand the port over non-blocking: a blocking port's write
// sits in the kernel while no host is connected, and closing the session
// cannot end it. A FIFO opened read-write stands in for a port with a host.
func TestWaitHostKeepsPortNonBlocking(t *testing.T) {
	dev := filepath.Join(t.TempDir(), "port")
	if err := unix.Mkfifo(dev, 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := waitHost(context.Background(), dev, make(chan os.Signal, 1))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var flags int
	if err := withFD(f, func(fd int) (err error) {
		flags, err = unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if flags&unix.O_NONBLOCK == 0 {
		t.Error("the port is blocking: a write without a host would hang its session")
	}
	if flags&unix.O_ASYNC != 0 {
		t.Error("the port still signals SIGIO for data")
	}
}
