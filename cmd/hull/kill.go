package main

import (
	"fmt"
	"strconv"
	"strings"
	"syscall"

	"github.com/urfave/cli/v2"
	"golang.org/x/sys/unix"
)

var killCommand = &cli.Command{
	Name:      "kill",
	Usage:     "send a signal (default SIGTERM) to the container's process",
	ArgsUsage: "<container-id> [signal]",
	Flags: []cli.Flag{
		&cli.BoolFlag{Name: "all", Aliases: []string{"a"}, Usage: "send the signal to every process of the container"},
	},
	Action: func(c *cli.Context) error {
		if c.NArg() < 1 || c.NArg() > 2 {
			return fmt.Errorf("%q requires 1 or 2 arguments: container id and signal", c.Command.Name)
		}
		id := c.Args().Get(0)
		sigName := "SIGTERM"
		if c.NArg() == 2 {
			sigName = c.Args().Get(1)
		}
		sig, err := parseSignal(sigName)
		if err != nil {
			return err
		}
		cfg, err := loadConfig(c)
		if err != nil {
			return err
		}
		client, err := liveAgent(cfg, id)
		if err != nil {
			return err
		}
		defer client.Close()
		return client.Signal(c.Context, id, "", uint32(sig), c.Bool("all"))
	},
}

// parseSignal accepts what runc kill accepts: a number, a name, with or
// without the SIG prefix.
func parseSignal(s string) (syscall.Signal, error) {
	if n, err := strconv.Atoi(s); err == nil {
		if n <= 0 || n > 64 {
			return 0, fmt.Errorf("unknown signal %q", s)
		}
		return syscall.Signal(n), nil
	}
	name := strings.ToUpper(s)
	if !strings.HasPrefix(name, "SIG") {
		name = "SIG" + name
	}
	sig := unix.SignalNum(name)
	if sig == 0 {
		return 0, fmt.Errorf("unknown signal %q", s)
	}
	return sig, nil
}
