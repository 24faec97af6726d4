package guest

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"

	"github.com/opencontainers/runc/libcontainer/utils"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/hullrt/hull/internal/guest/ctr"
)

// maxReadChunk bounds one ReadStdout/ReadStderr answer, well under ttrpc's
// 4 MiB message limit.
const maxReadChunk = 1 << 20

// process is one process the agent runs: a container's init or an exec.
type process struct {
	cp *ctr.Process
	// consoleSize is the terminal's first size, rows and columns.
	consoleSize [2]uint16

	stdin  io.WriteCloser // nil once closed
	stdout io.ReadCloser
	stderr io.ReadCloser // nil with a TTY: the terminal merges both streams
	tty    *os.File      // pty master, when the process has a terminal

	// childFiles are the process's ends of the stdio pipes and the console
	// socket, closed in the agent once the process has started.
	childFiles []*os.File
	console    *os.File // agent end of the console socket

	stdinMu sync.Mutex
	outMu   sync.Mutex
	errMu   sync.Mutex

	exited   chan struct{}
	status   int32
	exitedAt time.Time
}

// newIO wires stdio for cp: pipes, or a console socket on which
// hull-init hands back the pty master it creates inside the container.
func newIO(cp *ctr.Process, sp *specs.Process) (*process, error) {
	p := &process{cp: cp, exited: make(chan struct{})}
	if sp.Terminal {
		if sz := sp.ConsoleSize; sz != nil && sz.Height <= 0xffff && sz.Width <= 0xffff {
			p.consoleSize = [2]uint16{uint16(sz.Height), uint16(sz.Width)}
		}
		fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return nil, fmt.Errorf("creating console socket: %w", err)
		}
		p.console = os.NewFile(uintptr(fds[0]), "console-parent")
		child := os.NewFile(uintptr(fds[1]), "console-child")
		cp.Terminal, cp.ConsoleSocket = true, child
		p.childFiles = append(p.childFiles, child)
		return p, nil
	}
	var pipes [3][2]*os.File
	for i := range pipes {
		r, w, err := os.Pipe()
		if err != nil {
			p.closeAll()
			return nil, err
		}
		pipes[i] = [2]*os.File{r, w}
	}
	p.stdin, cp.Stdin = pipes[0][1], pipes[0][0]
	p.stdout, cp.Stdout = pipes[1][0], pipes[1][1]
	p.stderr, cp.Stderr = pipes[2][0], pipes[2][1]
	p.childFiles = []*os.File{pipes[0][0], pipes[1][1], pipes[2][1]}
	return p, nil
}

// started finishes the I/O set-up once hull-init has started the process.
func (p *process) started() error {
	for _, f := range p.childFiles {
		f.Close()
	}
	p.childFiles = nil
	if p.console == nil {
		return nil
	}
	defer p.console.Close()
	master, err := utils.RecvFile(p.console)
	if err != nil {
		return fmt.Errorf("receiving pty master: %w", err)
	}
	p.tty = master
	p.stdin = master
	p.stdout = master
	if p.consoleSize[0] != 0 && p.consoleSize[1] != 0 {
		_ = p.resize(p.consoleSize[0], p.consoleSize[1])
	}
	return nil
}

// wait reaps the process and records how it ended.
func (p *process) wait() {
	state, err := p.cp.Wait()
	p.status = exitStatus(state, err)
	p.exitedAt = time.Now()
	close(p.exited)
}

func exitStatus(state *os.ProcessState, err error) int32 {
	if state == nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			state = ee.ProcessState
		}
	}
	if state == nil {
		return 255
	}
	ws, ok := state.Sys().(syscall.WaitStatus)
	if !ok {
		return int32(state.ExitCode())
	}
	if ws.Signaled() {
		return 128 + int32(ws.Signal())
	}
	return int32(ws.ExitStatus())
}

func (p *process) write(b []byte) (int, error) {
	p.stdinMu.Lock()
	defer p.stdinMu.Unlock()
	if p.stdin == nil {
		return 0, errors.New("stdin is closed")
	}
	return p.stdin.Write(b)
}

func (p *process) closeStdin() error {
	p.stdinMu.Lock()
	defer p.stdinMu.Unlock()
	if p.stdin == nil || p.tty != nil {
		// The terminal stays open: closing the master would hang up the
		// process. EOF on a terminal is a ^D the client sends itself.
		return nil
	}
	err := p.stdin.Close()
	p.stdin = nil
	return err
}

// read returns up to n bytes of stdout or stderr; eof is true once the
// stream is drained (or absent, as stderr is with a terminal).
func (p *process) read(stderr bool, n uint32) (data []byte, eof bool, err error) {
	r, mu := p.stdout, &p.outMu
	if stderr {
		r, mu = p.stderr, &p.errMu
	}
	if r == nil {
		return nil, true, nil
	}
	mu.Lock()
	defer mu.Unlock()
	if n == 0 || n > maxReadChunk {
		n = maxReadChunk
	}
	buf := make([]byte, n)
	m, err := r.Read(buf)
	if m > 0 {
		return buf[:m], false, nil
	}
	// A pty master reads EIO once the last slave fd is closed: that is EOF.
	// So is a stream the host closed (closeOutput).
	if err == io.EOF || errors.Is(err, unix.EIO) || errors.Is(err, os.ErrClosed) {
		return nil, true, nil
	}
	return nil, false, err
}

// closeOutput closes the agent's end of stdout or stderr because the
// host can no longer take what the process writes there: the process's
// next write fails with EPIPE instead of blocking once the pipe is full.
// A read in progress ends, at EOF. With a terminal, stdout is the pty
// master, and closing it hangs the terminal up.
func (p *process) closeOutput(stderr bool) error {
	r := p.stdout
	if stderr {
		r = p.stderr
	}
	if r == nil {
		return nil
	}
	if err := r.Close(); err != nil && !errors.Is(err, os.ErrClosed) {
		return err
	}
	return nil
}

func (p *process) resize(rows, cols uint16) error {
	if p.tty == nil {
		return errors.New("process has no terminal")
	}
	return withFD(p.tty, func(fd int) error {
		return unix.IoctlSetWinsize(fd, unix.TIOCSWINSZ, &unix.Winsize{Row: rows, Col: cols})
	})
}

// withFD runs fn on f's descriptor without f.Fd(), which would switch f
// to blocking mode for good: a read or write of f then blocked in the
// kernel cannot be ended by closing f.
func withFD(f *os.File, fn func(fd int) error) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var ferr error
	if err := rc.Control(func(fd uintptr) { ferr = fn(int(fd)) }); err != nil {
		return err
	}
	return ferr
}

func (p *process) signal(sig syscall.Signal) error {
	return p.cp.Signal(sig)
}

// closeAll releases every descriptor the agent holds for the process.
func (p *process) closeAll() {
	for _, f := range p.childFiles {
		f.Close()
	}
	if p.console != nil {
		p.console.Close()
	}
	for _, c := range []io.Closer{p.stdin, p.stdout, p.stderr} {
		if c != nil {
			c.Close()
		}
	}
}
