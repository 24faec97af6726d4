// Command hull is the hull runtime's command line: a runc-compatible OCI
// runtime whose containers each run in their own virtual machine, plus
// tools to check the host, build the guest image and measure.
package main

import (
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/sirupsen/logrus"
	"github.com/urfave/cli/v2"

	"github.com/hullrt/hull/internal/config"
)

// version is set at build time.
var version = "dev"

func main() {
	app := &cli.App{
		Name:    "hull",
		Usage:   "run OCI containers in lightweight virtual machines",
		Version: version,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "config", Usage: "configuration file (default $" + config.EnvPath + " or " + config.DefaultPath + ")"},
			&cli.StringFlag{Name: "root", Usage: "root directory for container state (overrides runtime.root)"},
			&cli.BoolFlag{Name: "debug", Usage: "enable debug logging, also inside the guest"},
			&cli.StringFlag{Name: "log", Usage: "log file (default stderr)"},
			&cli.StringFlag{Name: "log-format", Value: "text", Usage: "log format: text or json"},
			&cli.BoolFlag{Name: "systemd-cgroup", Usage: "accepted for runc compatibility (the form of linux.cgroupsPath says which driver's it is)"},
			&cli.StringFlag{Name: "rootless", Usage: "accepted for runc compatibility (hull runs as root)"},
			&cli.StringFlag{Name: "criu", Hidden: true, Usage: "accepted for runc compatibility"},
		},
		Before: setupLogging,
		Commands: []*cli.Command{
			createCommand,
			startCommand,
			runCommand,
			stateCommand,
			killCommand,
			deleteCommand,
			execCommand,
			psCommand,
			listCommand,
			pauseCommand,
			resumeCommand,
			updateCommand,
			eventsCommand,
			specCommand,
			featuresCommand,
			versionCommand,
			monitorCommand,
			execMonitorCommand,
			checkCommand,
			envCommand,
			imageCommand,
			benchCommand,
			poolCommand,
		},
		// Errors are printed once, by main, in runc's "hull: message" form.
		ExitErrHandler: func(*cli.Context, error) {},
	}
	if err := app.Run(os.Args); err != nil {
		code := 1
		var ec cli.ExitCoder
		if errors.As(err, &ec) {
			code = ec.ExitCode()
		}
		if msg := err.Error(); msg != "" {
			fmt.Fprintln(os.Stderr, "hull:", msg)
			// containerd's runc shim (docker) reads a failed runtime's
			// error from the --log file, as runc writes it there too.
			if logFile {
				logrus.Error(msg)
			}
		}
		os.Exit(code)
	}
}

// logFile is set when logs go to the --log file.
var logFile bool

// setupLogging sends logs to --log, or to stderr with --debug. Otherwise
// they are dropped: every failure reaches the user as the one-line error
// main prints, and libraries' chatter (ttrpc's) must not interleave with a
// container's stderr.
func setupLogging(c *cli.Context) error {
	if c.Bool("debug") {
		logrus.SetLevel(logrus.DebugLevel)
	} else if c.String("log") == "" {
		logrus.SetOutput(io.Discard)
	}
	switch c.String("log-format") {
	case "text":
	case "json":
		logrus.SetFormatter(&logrus.JSONFormatter{})
	default:
		return fmt.Errorf("unknown log format %q", c.String("log-format"))
	}
	if p := c.String("log"); p != "" {
		f, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
		if err != nil {
			return fmt.Errorf("opening log file: %w", err)
		}
		logrus.SetOutput(f)
		logFile = true
	}
	return nil
}

// loadConfig loads the configuration and applies the global flags to it.
func loadConfig(c *cli.Context) (*config.Config, error) {
	cfg, err := config.Load(c.String("config"))
	if err != nil {
		return nil, err
	}
	if r := c.String("root"); r != "" {
		cfg.Runtime.Root = r
	}
	if c.Bool("debug") {
		cfg.Agent.Debug = true
	}
	return cfg, cfg.Validate()
}

// oneArg returns the single positional argument a command takes.
func oneArg(c *cli.Context, what string) (string, error) {
	if c.NArg() != 1 {
		return "", fmt.Errorf("%q requires exactly 1 argument: %s", c.Command.Name, what)
	}
	return c.Args().First(), nil
}
