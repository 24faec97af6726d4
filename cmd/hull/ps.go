package main

import (
	"fmt"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/urfave/cli/v2"
)

var psCommand = &cli.Command{
	Name:      "ps",
	Usage:     "list the processes of a container (pids are the guest's)",
	ArgsUsage: "<container-id>",
	Flags: []cli.Flag{
		&cli.StringFlag{Name: "format", Aliases: []string{"f"}, Value: "table", Usage: "table or json"},
	},
	Action: func(c *cli.Context) error {
		if c.NArg() < 1 {
			return fmt.Errorf("%q requires at least 1 argument: container id", c.Command.Name)
		}
		id := c.Args().First()
		format := c.String("format")
		if format != "table" && format != "json" {
			return fmt.Errorf("invalid format option %q", format)
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
		procs, err := client.ListProcesses(c.Context, id)
		if err != nil {
			return err
		}
		if format == "json" {
			pids := make([]int, 0, len(procs))
			for _, p := range procs {
				pids = append(pids, int(p.Pid))
			}
			return printJSON(pids)
		}
		w := tabwriter.NewWriter(os.Stdout, 5, 1, 2, ' ', 0)
		fmt.Fprint(w, "UID\tPID\tPPID\tSTAT\tCMD\n")
		for _, p := range procs {
			fmt.Fprintf(w, "%d\t%d\t%d\t%s\t%s\n", p.Uid, p.Pid, p.Ppid, p.State, strings.Join(p.Args, " "))
		}
		return w.Flush()
	},
}
