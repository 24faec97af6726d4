package ctr

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/opencontainers/runc/libcontainer/configs"
	"golang.org/x/sys/unix"
)

// Process is a process to run in a container: its init or an exec.
type Process struct {
	Args           []string
	Env            []string
	Cwd            string // "/" when empty
	UID, GID       uint32
	AdditionalGids []uint32
	// Capabilities nil leaves the process root's full set.
	Capabilities    *configs.Capabilities
	Rlimits         []configs.Rlimit
	NoNewPrivileges bool

	// Stdio, used when there is no terminal.
	Stdin          io.Reader
	Stdout, Stderr io.Writer
	// Terminal gives the process a pty of the container's devpts, its
	// master sent on ConsoleSocket (see RecvConsole).
	Terminal      bool
	ConsoleSocket *os.File

	cmd  *exec.Cmd
	done atomic.Bool // reaped
}

// Pid is the process's pid in the guest, 0 before it started.
func (p *Process) Pid() int {
	if p.cmd == nil || p.cmd.Process == nil {
		return 0
	}
	return p.cmd.Process.Pid
}

// Wait reaps the process.
func (p *Process) Wait() (*os.ProcessState, error) {
	if p.cmd == nil {
		return nil, errors.New("process not started")
	}
	err := p.cmd.Wait()
	p.done.Store(true)
	return p.cmd.ProcessState, err
}

// exited tells whether the process has been reaped: until then its pid
// is its own, even as a zombie.
func (p *Process) exited() bool { return p.done.Load() }

// Signal sends sig to the process.
func (p *Process) Signal(sig os.Signal) error {
	if p.cmd == nil || p.cmd.Process == nil {
		return errors.New("process not started")
	}
	return p.cmd.Process.Signal(sig)
}

// selfExe is the agent's own binary, which carries hull-init.
var selfExe = "/proc/self/exe"

// spawn starts hull-init in mode ("create" or "exec") with the plan p
// and returns the agent's end of the sync channel. join, when set, is a
// PID namespace the process is forked into. extra are the descriptors
// from 5 on (start, console, namespaces).
func spawn(mode string, pl *plan, proc *Process, cloneflags uintptr, cgroupFD int, join *os.File, extra []*os.File) (syncR *os.File, err error) {
	if pl.err != nil {
		return nil, pl.err
	}
	if len(pl.buf) > planMax {
		return nil, fmt.Errorf("the process's set-up (mounts, arguments, environment) takes %d bytes, more than hull-init's limit of %d", len(pl.buf), planMax)
	}
	planR, planW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	defer planR.Close()
	defer planW.Close()
	syncR, syncW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	defer syncW.Close()
	cmd := &exec.Cmd{
		Path:       selfExe,
		Args:       []string{"hull-init", mode},
		Env:        []string{},
		ExtraFiles: append([]*os.File{planR, syncW}, extra...),
		SysProcAttr: &syscall.SysProcAttr{
			Cloneflags:  cloneflags,
			UseCgroupFD: cgroupFD >= 0,
			CgroupFD:    cgroupFD,
		},
	}
	if !proc.Terminal {
		cmd.Stdin, cmd.Stdout, cmd.Stderr = proc.Stdin, proc.Stdout, proc.Stderr
	}
	if join == nil {
		err = cmd.Start()
	} else {
		err = startInPIDNamespace(cmd, join)
	}
	if err != nil {
		syncR.Close()
		return nil, fmt.Errorf("starting hull-init: %w", err)
	}
	proc.cmd = cmd
	planR.Close()
	syncW.Close()
	// The plan fits the pipe or hull-init reads it while we write.
	if _, err := planW.Write(pl.buf); err != nil {
		// hull-init stopped reading: it failed, and says why on the
		// sync channel before it exits.
		_ = syncR.SetReadDeadline(time.Now().Add(5 * time.Second))
		why := awaitExec(syncR)
		syncR.Close()
		proc.kill()
		if why != nil && !errors.Is(why, os.ErrDeadlineExceeded) {
			return nil, why
		}
		return nil, fmt.Errorf("writing the plan: %w", err)
	}
	planW.Close()
	return syncR, nil
}

// startInPIDNamespace starts cmd from a thread that has joined the PID
// namespace ns (setns of a PID namespace applies to the children of the
// calling thread only). The thread is thrown away afterwards: it is left
// locked, so the runtime ends it with its goroutine.
func startInPIDNamespace(cmd *exec.Cmd, ns *os.File) error {
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if err := unix.Setns(int(ns.Fd()), unix.CLONE_NEWPID); err != nil {
			done <- fmt.Errorf("joining the PID namespace: %w", err)
			return
		}
		done <- cmd.Start()
	}()
	return <-done
}

func (p *Process) kill() {
	if p.cmd != nil && p.cmd.Process != nil {
		_ = p.cmd.Process.Kill()
		_, _ = p.Wait()
	}
}

// awaitReady waits for hull-init's 'R': the container is set up and its
// process waits for the start byte.
func awaitReady(r *os.File) error {
	var b [1]byte
	n, err := r.Read(b[:])
	if n == 1 && b[0] == 'R' {
		return nil
	}
	if n == 0 {
		if err == io.EOF {
			return errors.New("hull-init exited before the container was ready")
		}
		return err
	}
	rest, _ := io.ReadAll(io.LimitReader(r, 8192))
	return syncError(append(b[:n], rest...))
}

// awaitExec waits for the sync channel's end: hull-init executed the
// process (the descriptor closes on exec), or it reports why not.
func awaitExec(r *os.File) error {
	b, err := io.ReadAll(io.LimitReader(r, 8192))
	if err != nil {
		return err
	}
	if len(b) == 0 {
		return nil
	}
	return syncError(b)
}

func syncError(b []byte) error {
	if b[0] == 'E' {
		return errors.New(strings.ToValidUTF8(string(b[1:]), "?"))
	}
	return fmt.Errorf("unexpected answer %q from hull-init", b)
}
