package main

import (
	"fmt"

	"github.com/urfave/cli/v2"

	"github.com/hullrt/hull/internal/container"
)

var pauseCommand = &cli.Command{
	Name:      "pause",
	Usage:     "freeze every process of a container",
	ArgsUsage: "<container-id>",
	Action: func(c *cli.Context) error {
		return setPaused(c, true)
	},
}

var resumeCommand = &cli.Command{
	Name:      "resume",
	Usage:     "thaw a paused container",
	ArgsUsage: "<container-id>",
	Action: func(c *cli.Context) error {
		return setPaused(c, false)
	},
}

func setPaused(c *cli.Context, pause bool) error {
	cfg, id, err := setup(c)
	if err != nil {
		return err
	}
	h, err := rootOf(cfg).Open(id)
	if err != nil {
		return err
	}
	defer h.Close()
	h.Refresh()
	from, to := container.Running, container.Paused
	if !pause {
		from, to = container.Paused, container.Running
	}
	if h.Status != from {
		return fmt.Errorf("container not %s", from)
	}
	client, err := agentFor(cfg, id)
	if err != nil {
		return err
	}
	defer client.Close()
	if pause {
		err = client.Pause(c.Context, id)
	} else {
		err = client.Resume(c.Context, id)
	}
	if err != nil {
		return err
	}
	h.Status = to
	return h.Save()
}
