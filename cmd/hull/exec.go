package main

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/urfave/cli/v2"

	"github.com/hullrt/hull/internal/config"
	"github.com/hullrt/hull/internal/container"
	"github.com/hullrt/hull/internal/monitor"
	"github.com/hullrt/hull/internal/stdio"
)

var execFlags = []cli.Flag{
	&cli.StringFlag{Name: "process", Aliases: []string{"p"}, Usage: "path to a process.json (the OCI process object)"},
	&cli.BoolFlag{Name: "tty", Aliases: []string{"t"}, Usage: "allocate a pseudo-TTY"},
	&cli.BoolFlag{Name: "detach", Aliases: []string{"d"}, Usage: "detach from the process"},
	&cli.StringFlag{Name: "pid-file", Usage: "file to write the pid of the process that stands for the exec'd one"},
	&cli.StringFlag{Name: "console-socket", Usage: "unix socket that receives the master of the process's pty"},
	&cli.StringSliceFlag{Name: "env", Aliases: []string{"e"}, Usage: "set an environment variable"},
	&cli.StringFlag{Name: "cwd", Usage: "working directory in the container"},
	&cli.StringFlag{Name: "user", Aliases: []string{"u"}, Usage: "UID[:GID]"},
	&cli.Int64SliceFlag{Name: "additional-gids", Aliases: []string{"g"}, Usage: "additional gids"},
	&cli.StringSliceFlag{Name: "cap", Aliases: []string{"c"}, Usage: "add a capability"},
	&cli.BoolFlag{Name: "no-new-privs", Usage: "set no_new_privileges"},
	&cli.IntFlag{Name: "preserve-fds", Usage: "only 0: a VM cannot receive host descriptors"},
	&cli.StringFlag{Name: "process-label", Usage: "accepted for runc compatibility (no SELinux in the guest)"},
	&cli.StringFlag{Name: "apparmor", Usage: "accepted for runc compatibility (no AppArmor in the guest)"},
	&cli.StringFlag{Name: "cgroup", Usage: "accepted for runc compatibility"},
	&cli.BoolFlag{Name: "ignore-paused", Usage: "accepted for runc compatibility"},
}

var execCommand = &cli.Command{
	Name:      "exec",
	Usage:     "run a new process in a running container",
	ArgsUsage: "<container-id> [command [args...]]",
	Flags:     execFlags,
	// Flags after the command belong to the command.
	SkipFlagParsing: false,
	Action: func(c *cli.Context) error {
		if c.NArg() < 1 {
			return fmt.Errorf("%q requires at least 1 argument: container id", c.Command.Name)
		}
		id := c.Args().First()
		cfg, err := loadConfig(c)
		if err != nil {
			return err
		}
		if c.Int("preserve-fds") != 0 {
			return errors.New("--preserve-fds: host file descriptors cannot be passed into a VM")
		}
		st, err := rootOf(cfg).Load(id)
		if err != nil {
			return err
		}
		p, err := execProcess(c, st)
		if err != nil {
			return err
		}
		if p.Terminal && c.Bool("detach") && c.String("console-socket") == "" {
			return stdio.ErrConsoleSocketNeeded
		}
		eid := newExecID()
		if c.Bool("detach") {
			return detachExec(c, cfg, id, eid, p)
		}
		status, err := monitor.RunExec(monitor.ExecOptions{
			Root: rootOf(cfg), ID: id, ExecID: eid, Process: p,
			IO:      ownIO(c, p.Terminal),
			Timeout: cfg.Agent.RequestTimeout.Duration,
			Ready: func(err error) {
				if err == nil {
					_ = writePidFile(c.String("pid-file"), os.Getpid())
				}
			},
		})
		if err != nil {
			return err
		}
		return cli.Exit("", status)
	},
}

// detachExec hands the process to an exec monitor that stands for it.
func detachExec(c *cli.Context, cfg *config.Config, id, eid string, p *specs.Process) error {
	spec, err := os.CreateTemp(rootOf(cfg).Dir(id), "exec-*.json")
	if err != nil {
		return err
	}
	defer os.Remove(spec.Name())
	if err := json.NewEncoder(spec).Encode(p); err != nil {
		spec.Close()
		return err
	}
	spec.Close()
	args := []string{"_exec-monitor", "--process", spec.Name(), "--exec-id", eid}
	if s := c.String("console-socket"); s != "" {
		args = append(args, "--console-socket", s)
	}
	pid, err := spawnMonitor(c, cfg, append(args, id), p.Terminal, 0)
	if err != nil {
		return err
	}
	return writePidFile(c.String("pid-file"), pid)
}

var execMonitorCommand = &cli.Command{
	Name:      "_exec-monitor",
	Hidden:    true,
	Usage:     "internal: stand for a process exec'd into a container (started by exec --detach)",
	ArgsUsage: "<container-id>",
	Flags: []cli.Flag{
		&cli.StringFlag{Name: "process", Required: true},
		&cli.StringFlag{Name: "exec-id", Required: true},
		&cli.StringFlag{Name: "console-socket"},
	},
	Action: func(c *cli.Context) error {
		keepSyncFromChildren()
		cfg, id, err := setup(c)
		if err != nil {
			reportReady(err)
			return err
		}
		p, err := readProcessFile(c.String("process"))
		if err != nil {
			reportReady(err)
			return err
		}
		status, err := monitor.RunExec(monitor.ExecOptions{
			Root: rootOf(cfg), ID: id, ExecID: c.String("exec-id"), Process: p,
			IO:      ownIO(c, p.Terminal),
			Timeout: cfg.Agent.RequestTimeout.Duration,
			Ready:   reportReady,
		})
		if err != nil {
			return monitorFailed(err)
		}
		return cli.Exit("", status)
	},
}

// execProcess builds the process to exec: --process, or the container's
// own process with the command line and flags applied, as runc does.
func execProcess(c *cli.Context, st *container.State) (*specs.Process, error) {
	if path := c.String("process"); path != "" {
		return readProcessFile(path)
	}
	if c.NArg() < 2 {
		return nil, errors.New("exec needs a command, or --process")
	}
	if st.Spec == nil || st.Spec.Process == nil {
		return nil, errors.New("container has no process to base the exec on")
	}
	p := *st.Spec.Process
	p.Args = c.Args().Slice()[1:]
	p.Terminal = c.Bool("tty")
	p.ConsoleSize = nil
	p.Env = append(append([]string(nil), p.Env...), c.StringSlice("env")...)
	if cwd := c.String("cwd"); cwd != "" {
		p.Cwd = cwd
	}
	if u := c.String("user"); u != "" {
		uid, gid, err := parseUser(u)
		if err != nil {
			return nil, err
		}
		p.User = specs.User{UID: uid, GID: gid}
	}
	for _, g := range c.Int64Slice("additional-gids") {
		if g < 0 || g > 1<<32-1 {
			return nil, fmt.Errorf("invalid additional gid %d", g)
		}
		p.User.AdditionalGids = append(p.User.AdditionalGids, uint32(g))
	}
	if caps := c.StringSlice("cap"); len(caps) > 0 && p.Capabilities != nil {
		pc := *p.Capabilities
		pc.Bounding = append(append([]string(nil), pc.Bounding...), caps...)
		pc.Effective = append(append([]string(nil), pc.Effective...), caps...)
		pc.Permitted = append(append([]string(nil), pc.Permitted...), caps...)
		p.Capabilities = &pc
	}
	if c.Bool("no-new-privs") {
		p.NoNewPrivileges = true
	}
	return &p, nil
}

func readProcessFile(path string) (*specs.Process, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading process file: %w", err)
	}
	var p specs.Process
	if err := json.Unmarshal(b, &p); err != nil {
		return nil, fmt.Errorf("parsing process file %s: %w", path, err)
	}
	if len(p.Args) == 0 {
		return nil, fmt.Errorf("process file %s: args must not be empty", path)
	}
	if p.Cwd == "" {
		p.Cwd = "/"
	}
	return &p, nil
}

func parseUser(s string) (uint32, uint32, error) {
	u, g, _ := strings.Cut(s, ":")
	uid, err := strconv.ParseUint(u, 10, 32)
	if err != nil {
		return 0, 0, fmt.Errorf("invalid user %q: want UID[:GID]", s)
	}
	var gid uint64
	if g != "" {
		if gid, err = strconv.ParseUint(g, 10, 32); err != nil {
			return 0, 0, fmt.Errorf("invalid user %q: want UID[:GID]", s)
		}
	}
	return uint32(uid), uint32(gid), nil
}

func newExecID() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return "exec-" + hex.EncodeToString(b)
}
