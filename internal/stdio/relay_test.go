package stdio

import (
	"net"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/containerd/console"
	"github.com/opencontainers/runc/libcontainer/utils"
	"golang.org/x/sys/unix"
)

// TestSendConsoleLeavesOtherFilesAlone sends a pty master to a console
// socket, closes it as terminal() does, and checks that the file which
// then takes the master's descriptor number survives garbage collection:
// a second owner of the master's fd would close that number again when
// collected (it was once the monitor's socket, and start found it dead).
func TestSendConsoleLeavesOtherFilesAlone(t *testing.T) {
	master, _, err := console.NewPty()
	if err != nil {
		t.Skipf("no pty on this host: %v", err)
	}
	path := filepath.Join(t.TempDir(), "console.sock")
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	received := make(chan *os.File, 1)
	go func() {
		c, err := l.AcceptUnix()
		if err != nil {
			received <- nil
			return
		}
		defer c.Close()
		f, err := c.File()
		if err != nil {
			received <- nil
			return
		}
		defer f.Close()
		got, err := utils.RecvFile(f)
		if err != nil {
			t.Errorf("receiving the master: %v", err)
		}
		received <- got
	}()
	if err := sendConsole(path, master); err != nil {
		t.Fatal(err)
	}
	got := <-received
	if got == nil {
		t.Fatal("the console socket received no file")
	}
	defer got.Close()
	if got.Name() != "/dev/ptmx" {
		t.Errorf("received file named %q, want /dev/ptmx", got.Name())
	}
	fd := master.Fd()
	master.Close()

	// The lowest free number is the master's: this file gets it.
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	if r.Fd() != fd && w.Fd() != fd {
		t.Skipf("the master's descriptor %d went to no new file (pipe got %d, %d)", fd, r.Fd(), w.Fd())
	}
	for i := 0; i < 3; i++ {
		runtime.GC()
		time.Sleep(10 * time.Millisecond)
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(fd), &st); err != nil {
		t.Fatalf("descriptor %d, now the pipe's, was closed behind its owner's back: %v", fd, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFIFO {
		t.Fatalf("descriptor %d is no longer the pipe (mode %o)", fd, st.Mode)
	}
}
