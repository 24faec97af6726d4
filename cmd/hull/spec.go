package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/opencontainers/runc/libcontainer/specconv"
	"github.com/urfave/cli/v2"

	"github.com/hullrt/hull/internal/busybox"
)

var specCommand = &cli.Command{
	Name:  "spec",
	Usage: "create a new specification file (config.json), as runc spec does",
	Flags: []cli.Flag{
		&cli.StringFlag{Name: "bundle", Aliases: []string{"b"}, Value: ".", Usage: "path to the root of the bundle directory"},
	},
	Action: func(c *cli.Context) error {
		if c.NArg() != 0 {
			return fmt.Errorf("%q takes no arguments", c.Command.Name)
		}
		dir := c.String("bundle")
		path := filepath.Join(dir, "config.json")
		if _, err := os.Stat(path); err == nil {
			return errors.New("file config.json exists, remove it first")
		}
		spec := specconv.Example()
		return busybox.WriteSpec(dir, spec)
	},
}
