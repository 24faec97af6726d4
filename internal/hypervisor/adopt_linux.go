package hypervisor

import (
	"errors"
	"fmt"
	"sync"

	"golang.org/x/sys/unix"
)

// Adopted is a process another process started (a VM from the pool and its
// helpers), watched and signalled through a pidfd, so that a recycled pid
// is never mistaken for it. Its parent, not this process, reaps it.
type Adopted struct {
	Pid  int
	mu   sync.Mutex
	fd   int // -1 once the process has exited
	done chan struct{}
}

// Adopt starts watching process pid.
func Adopt(pid int) (*Adopted, error) {
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return nil, fmt.Errorf("adopting process %d: %w", pid, err)
	}
	a := &Adopted{Pid: pid, fd: fd, done: make(chan struct{})}
	go func() {
		// A pidfd polls readable once the process has exited.
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		for {
			_, err := unix.Poll(fds, -1)
			if !errors.Is(err, unix.EINTR) {
				break
			}
		}
		a.mu.Lock()
		unix.Close(fd)
		a.fd = -1
		close(a.done)
		a.mu.Unlock()
	}()
	return a, nil
}

// Done is closed when the process has exited.
func (a *Adopted) Done() <-chan struct{} { return a.done }

// Signal sends sig to the process unless it has exited.
func (a *Adopted) Signal(sig unix.Signal) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.fd < 0 {
		return nil
	}
	err := unix.PidfdSendSignal(a.fd, sig, nil, 0)
	if errors.Is(err, unix.ESRCH) {
		return nil
	}
	return err
}
