package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/urfave/cli/v2"
	"golang.org/x/sys/unix"

	"github.com/hullrt/hull/internal/agentclient"
	"github.com/hullrt/hull/internal/config"
	"github.com/hullrt/hull/internal/container"
	"github.com/hullrt/hull/internal/monitor"
	"github.com/hullrt/hull/internal/stdio"
)

// syncFd is the descriptor on which a monitor reports that it is ready.
const syncFd = 3

func rootOf(cfg *config.Config) container.Root { return container.Root(cfg.Runtime.Root) }

// setup loads the configuration and the one container id a command takes.
func setup(c *cli.Context) (*config.Config, string, error) {
	id, err := oneArg(c, "container id")
	if err != nil {
		return nil, "", err
	}
	cfg, err := loadConfig(c)
	return cfg, id, err
}

// running loads container id and checks that it has a live process.
func running(cfg *config.Config, id string) (*container.State, error) {
	st, err := rootOf(cfg).Load(id)
	if err != nil {
		return nil, err
	}
	st.Refresh()
	switch st.Status {
	case container.Created, container.Running, container.Paused:
		return st, nil
	}
	return nil, errors.New("container not running")
}

// liveAgent checks that container id has a live process and returns a
// client of its agent.
func liveAgent(cfg *config.Config, id string) (*agentclient.Client, error) {
	if _, err := running(cfg, id); err != nil {
		return nil, err
	}
	return agentFor(cfg, id)
}

// agentFor returns an agent client that reaches container id's guest
// through its monitor.
func agentFor(cfg *config.Config, id string) (*agentclient.Client, error) {
	return agentclient.New(monitor.Dial{Path: rootOf(cfg).Socket(id)}, cfg.Agent.RequestTimeout.Duration)
}

// globalArgs repeats the global flags for a monitor process.
func globalArgs(c *cli.Context, cfg *config.Config) []string {
	args := []string{"--root", cfg.Runtime.Root}
	if p := c.String("config"); p != "" {
		args = append(args, "--config", p)
	}
	if p := c.String("log"); p != "" {
		args = append(args, "--log", p, "--log-format", c.String("log-format"))
	}
	if c.Bool("debug") {
		args = append(args, "--debug")
	}
	return args
}

// spawnMonitor starts a detached monitor (`hull _monitor ...`) and waits
// until it reports the container created. It returns the monitor's pid;
// the monitor outlives us. It inherits our stdio, which is the process's,
// unless the process has a terminal: then the pty sent to the console
// socket is, and a caller that reads our output to its end (containerd's
// runc shim) must not wait for the monitor's exit. cloneflags are
// namespaces the monitor gets of its own.
func spawnMonitor(c *cli.Context, cfg *config.Config, args []string, terminal bool, cloneflags uintptr) (int, error) {
	self, err := os.Executable()
	if err != nil {
		return 0, err
	}
	r, w, err := os.Pipe()
	if err != nil {
		return 0, err
	}
	defer r.Close()
	cmd := exec.Command(self, append(globalArgs(c, cfg), args...)...)
	if !terminal {
		cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	}
	cmd.ExtraFiles = []*os.File{w}
	// Its own session: signals to our process group (a ^C on the terminal
	// that ran `hull create`) are not the container's.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Cloneflags: cloneflags}
	if err := cmd.Start(); err != nil {
		w.Close()
		return 0, fmt.Errorf("starting monitor: %w", err)
	}
	w.Close()
	msg, _ := io.ReadAll(r)
	if string(msg) == "ok" {
		pid := cmd.Process.Pid
		_ = cmd.Process.Release()
		return pid, nil
	}
	werr := cmd.Wait()
	if len(msg) == 0 {
		return 0, fmt.Errorf("monitor exited before the container was created: %v", werr)
	}
	var ec cli.ExitCoder
	code := 1
	if errors.As(werr, &ec) {
		code = ec.ExitCode()
	} else if ee, ok := werr.(*exec.ExitError); ok && ee.ExitCode() > 0 {
		code = ee.ExitCode()
	}
	return 0, cli.Exit(strings.TrimSpace(string(msg)), code)
}

// keepSyncFromChildren stops the processes a monitor starts (QEMU,
// virtiofsd) from inheriting the sync pipe, which would hold it open and
// keep spawnMonitor from ever seeing its end.
func keepSyncFromChildren() {
	unix.CloseOnExec(syncFd)
}

// reportReady is the monitor's side of spawnMonitor's handshake.
func reportReady(err error) {
	f := os.NewFile(syncFd, "sync")
	if f == nil {
		return
	}
	defer f.Close()
	if err != nil {
		fmt.Fprint(f, err.Error())
		return
	}
	fmt.Fprint(f, "ok")
}

// monitorFailed is how a monitor exits after it reported err through the
// sync pipe: silently, since the CLI that started it prints the error, and
// with 128+signal when a signal interrupted it.
func monitorFailed(err error) error {
	var ie *monitor.InterruptedError
	if errors.As(err, &ie) {
		return cli.Exit("", 128+int(ie.Signal))
	}
	return cli.Exit("", 1)
}

// ownIO is the stdio of a process that uses this process's own: the
// caller's files, or a pty for --console-socket.
func ownIO(c *cli.Context, terminal bool) stdio.IO {
	return stdio.IO{
		Terminal:      terminal,
		ConsoleSocket: c.String("console-socket"),
		Stdin:         os.Stdin,
		Stdout:        os.Stdout,
		Stderr:        os.Stderr,
	}
}

// writePidFile writes pid atomically, as runc does.
func writePidFile(path string, pid int) error {
	if path == "" {
		return nil
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return err
	}
	tmp := filepath.Join(filepath.Dir(abs), "."+filepath.Base(abs)+".tmp")
	if err := os.WriteFile(tmp, []byte(strconv.Itoa(pid)), 0o644); err != nil {
		return fmt.Errorf("writing pid file: %w", err)
	}
	return os.Rename(tmp, abs)
}
