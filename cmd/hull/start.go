package main

import (
	"github.com/urfave/cli/v2"

	"github.com/hullrt/hull/internal/monitor"
)

var startCommand = &cli.Command{
	Name:      "start",
	Usage:     "start the process of a created container",
	ArgsUsage: "<container-id>",
	Action: func(c *cli.Context) error {
		cfg, id, err := setup(c)
		if err != nil {
			return err
		}
		client, err := liveAgent(cfg, id)
		if err != nil {
			return err
		}
		defer client.Close()
		return monitor.Start(c.Context, rootOf(cfg), id, client)
	},
}
