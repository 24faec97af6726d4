package main

import (
	"errors"
	"os"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/hullrt/hull/internal/monitor"
)

var runCommand = &cli.Command{
	Name:      "run",
	Usage:     "create and run a container in a new VM; in the foreground, relay its stdio and exit with its exit code",
	ArgsUsage: "<container-id>",
	Flags: append([]cli.Flag{
		&cli.BoolFlag{Name: "detach", Aliases: []string{"d"}, Usage: "detach from the container's process"},
		&cli.BoolFlag{Name: "keep", Usage: "do not delete the container after it exits"},
	}, createFlags...),
	Action: func(c *cli.Context) error {
		if c.Bool("detach") {
			return createOrRun(c, true)
		}
		cfg, id, b, err := prepareCreate(c)
		if err != nil {
			return err
		}
		root := rootOf(cfg)
		status, err := monitor.RunContainer(monitor.ContainerOptions{
			Config: cfg,
			Root:   root,
			ID:     id,
			Bundle: b,
			IO:     ownIO(c, b.Spec.Process.Terminal),
			Start:  true,
			Ready: func(err error) {
				if err == nil {
					_ = writePidFile(c.String("pid-file"), os.Getpid())
				}
			},
		})
		var ie *monitor.InterruptedError
		if errors.As(err, &ie) {
			return cli.Exit(ie.Error(), 128+int(ie.Signal))
		}
		if err != nil {
			return err
		}
		if !c.Bool("keep") {
			t := time.Now()
			if err := deleteContainer(cfg, id, true); err != nil {
				return err
			}
			monitor.RecordPhase("delete", time.Since(t))
		}
		return cli.Exit("", status)
	},
}
