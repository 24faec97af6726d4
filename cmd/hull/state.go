package main

import (
	"encoding/json"
	"fmt"
	"os"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"
)

var stateCommand = &cli.Command{
	Name:      "state",
	Usage:     "print the state of a container as OCI state JSON",
	ArgsUsage: "<container-id>",
	Action: func(c *cli.Context) error {
		cfg, id, err := setup(c)
		if err != nil {
			return err
		}
		st, err := rootOf(cfg).Load(id)
		if err != nil {
			return err
		}
		st.Refresh()
		return printJSON(st.OCI())
	},
}

var listCommand = &cli.Command{
	Name:  "list",
	Usage: "list the containers under the root",
	Flags: []cli.Flag{
		&cli.StringFlag{Name: "format", Aliases: []string{"f"}, Value: "table", Usage: "table or json"},
		&cli.BoolFlag{Name: "quiet", Aliases: []string{"q"}, Usage: "print only the ids"},
	},
	Action: func(c *cli.Context) error {
		if c.NArg() != 0 {
			return fmt.Errorf("%q takes no arguments", c.Command.Name)
		}
		cfg, err := loadConfig(c)
		if err != nil {
			return err
		}
		list, err := rootOf(cfg).List()
		if err != nil {
			return err
		}
		if c.Bool("quiet") {
			for _, st := range list {
				fmt.Println(st.ID)
			}
			return nil
		}
		switch c.String("format") {
		case "json":
			out := make([]any, 0, len(list))
			for _, st := range list {
				out = append(out, st.OCI())
			}
			return printJSON(out)
		case "table":
			w := tabwriter.NewWriter(os.Stdout, 12, 1, 3, ' ', 0)
			fmt.Fprint(w, "ID\tPID\tSTATUS\tBUNDLE\tCREATED\tOWNER\n")
			for _, st := range list {
				o := st.OCI()
				fmt.Fprintf(w, "%s\t%d\t%s\t%s\t%s\t%s\n", o.ID, o.Pid, o.Status, o.Bundle, o.Created.Format(time.RFC3339Nano), "root")
			}
			return w.Flush()
		default:
			return fmt.Errorf("invalid format option %q", c.String("format"))
		}
	},
}

func printJSON(v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	_, err = fmt.Println(string(b))
	return err
}
