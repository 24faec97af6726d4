package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/hullrt/hull/internal/bench"
	"github.com/hullrt/hull/internal/busybox"
	"github.com/hullrt/hull/internal/image"
)

var benchCommand = &cli.Command{
	Name:        "bench",
	Usage:       "measure hull side by side with the host's other OCI runtimes",
	Subcommands: []*cli.Command{benchStartCommand, benchNetCommand, benchIOCommand, benchMemoryCommand, benchDensityCommand},
}

var benchStartCommand = &cli.Command{
	Name:  "start",
	Usage: "measure process start and a whole run of /bin/true under each runtime",
	Description: "Process start is the time from launching `<runtime> run` to the first byte of the\n" +
		"container's stdout, so it includes the runtime's relay of that output. Runtimes\n" +
		"not in PATH are reported as not installed; crun and runsc as unavailable if\n" +
		"their first run fails. Progress goes to stderr.",
	Flags: []cli.Flag{
		&cli.IntFlag{Name: "runs", Value: 10, Usage: "timed runs of each runtime and measure"},
		&cli.BoolFlag{Name: "json", Usage: "print the results as JSON"},
		&cli.StringSliceFlag{Name: "runtimes", Value: cli.NewStringSlice(bench.Known...), Usage: "runtimes to measure, comma-separated"},
	},
	Action: func(c *cli.Context) error {
		if c.NArg() != 0 {
			return fmt.Errorf("%q takes no arguments", c.Command.Name)
		}
		if c.Int("runs") < 1 {
			return errors.New("--runs must be at least 1")
		}
		hull, err := benchHull(c)
		if err != nil {
			return err
		}

		// Ctrl-C stops the run in progress and still removes everything.
		ctx, stop, progress := untilInterrupted(c.Context)
		defer stop()
		dir, removeScratch, err := bench.Scratch("start")
		if err != nil {
			return err
		}
		defer removeScratch()
		opts := bench.Options{
			Runtimes:    c.StringSlice("runtimes"),
			Hull:        hull,
			StateDir:    filepath.Join(dir, "state"),
			StartBundle: filepath.Join(dir, "start"),
			TrueBundle:  filepath.Join(dir, "true"),
			Runs:        c.Int("runs"),
			Version:     version,
			Progress:    progress,
		}
		for bundle, args := range map[string][]string{opts.StartBundle: bench.StartProcess, opts.TrueBundle: bench.TrueProcess} {
			if err := os.Mkdir(bundle, 0o755); err != nil {
				return fmt.Errorf("creating bundle: %w", err)
			}
			if err := busybox.WriteBundle(bundle, args, nil); err != nil {
				return fmt.Errorf("writing bundle: %w", err)
			}
		}

		rep, err := bench.Run(ctx, opts)
		return finishBench(ctx, c, rep, err)
	},
}

var benchNetCommand = &cli.Command{
	Name:  "net",
	Usage: "measure TCP throughput host→pod and pod→pod (iperf3) under each runtime",
	Description: "Pods are network namespaces on a bridge, in namespaces of the benchmark's own\n" +
		"(the host's network is untouched); iperf3 runs in the containers, copied with its\n" +
		"libraries into a busybox bundle. Progress goes to stderr.",
	Flags: []cli.Flag{
		&cli.IntFlag{Name: "runs", Value: 3, Usage: "runs of each runtime and path"},
		&cli.IntFlag{Name: "seconds", Value: 5, Usage: "length of each iperf3 run"},
		&cli.BoolFlag{Name: "json", Usage: "print the results as JSON"},
		&cli.StringSliceFlag{Name: "runtimes", Value: cli.NewStringSlice("hull", "runc"), Usage: "runtimes to measure, comma-separated"},
	},
	Action: func(c *cli.Context) error {
		if c.NArg() != 0 {
			return fmt.Errorf("%q takes no arguments", c.Command.Name)
		}
		if c.Int("runs") < 1 || c.Int("seconds") < 1 {
			return errors.New("--runs and --seconds must be at least 1")
		}
		hull, err := benchHull(c)
		if err != nil {
			return err
		}
		ctx, stop, progress := untilInterrupted(c.Context)
		defer stop()
		dir, removeScratch, err := bench.Scratch("net")
		if err != nil {
			return err
		}
		defer removeScratch()
		rep, err := bench.RunNet(ctx, bench.NetOptions{
			Runtimes: c.StringSlice("runtimes"),
			Hull:     hull,
			Dir:      dir,
			Runs:     c.Int("runs"),
			Seconds:  c.Int("seconds"),
			Version:  version,
			Progress: progress,
		})
		return finishBench(ctx, c, rep, err)
	},
}

var benchIOCommand = &cli.Command{
	Name:  "io",
	Usage: "measure file I/O (fio) on a bind-mounted volume under hull, per shared filesystem, and runc",
	Description: "fio runs sequential read, random 4 KiB read and sequential write on a host directory\n" +
		"bind-mounted into the container, the same directory for every runtime. Files to read are\n" +
		"written by the host first, so they are in its page cache but not the guest's; I/O is\n" +
		"buffered, writes end with fsync. hull runs once per shared filesystem: virtio-9p with the\n" +
		"configured image if it has 9p, else the one in --image-9p. fio is copied with its\n" +
		"libraries into a busybox bundle. Progress goes to stderr.",
	Flags: []cli.Flag{
		&cli.IntFlag{Name: "runs", Value: 3, Usage: "runs of each runtime"},
		&cli.IntFlag{Name: "size", Value: 64, Usage: "size of each file fio reads or writes, in MiB"},
		&cli.IntFlag{Name: "seconds", Value: 5, Usage: "most seconds each fio job runs"},
		&cli.BoolFlag{Name: "json", Usage: "print the results as JSON"},
		&cli.StringSliceFlag{Name: "shared-fs", Value: cli.NewStringSlice(image.SharedFSKinds()...), Usage: "shared filesystems to run hull with, comma-separated"},
		&cli.StringFlag{Name: "image-9p", Usage: "guest image with 9p, when the configured one has none (default: image.dir + \"-9p\")"},
	},
	Action: func(c *cli.Context) error {
		if c.NArg() != 0 {
			return fmt.Errorf("%q takes no arguments", c.Command.Name)
		}
		if c.Int("runs") < 1 || c.Int("size") < 1 || c.Int("seconds") < 1 {
			return errors.New("--runs, --size and --seconds must be at least 1")
		}
		cfg, err := loadConfig(c)
		if err != nil {
			return err
		}
		for _, kind := range c.StringSlice("shared-fs") {
			if !slices.Contains(image.SharedFSKinds(), kind) {
				return fmt.Errorf("--shared-fs: unknown shared filesystem %q (known: %s)", kind, strings.Join(image.SharedFSKinds(), ", "))
			}
		}
		exe, err := os.Executable()
		if err != nil {
			return fmt.Errorf("finding the hull binary: %w", err)
		}
		ctx, stop, progress := untilInterrupted(c.Context)
		defer stop()
		dir, removeScratch, err := bench.Scratch("io")
		if err != nil {
			return err
		}
		defer removeScratch()
		rep, err := bench.RunIO(ctx, bench.IOOptions{
			Config:   cfg,
			Hull:     exe,
			SharedFS: c.StringSlice("shared-fs"),
			Image9P:  firstNonEmpty(c.String("image-9p"), cfg.Image.Dir+"-9p"),
			Dir:      dir,
			Runs:     c.Int("runs"),
			SizeMiB:  c.Int("size"),
			Seconds:  c.Int("seconds"),
			Version:  version,
			Progress: progress,
		})
		return finishBench(ctx, c, rep, err)
	},
}

// benchHull is the hull command line the benchmarks run: this binary with
// the caller's --config.
func benchHull(c *cli.Context) ([]string, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("finding the hull binary: %w", err)
	}
	hull := []string{exe}
	if p := c.String("config"); p != "" {
		hull = append(hull, "--config", p)
	}
	return hull, nil
}

var benchMemoryCommand = &cli.Command{
	Name:  "memory",
	Usage: "measure what one idle pod costs the host in memory, under each runtime",
	Description: "Starts one idle container (sleep) at a time with create and start, lets it settle,\n" +
		"and adds up the proportional set size (PSS, /proc/PID/smaps_rollup) of every host\n" +
		"process of the pod: for hull the monitor, the VMM and virtiofsd; hull-pooled claims\n" +
		"its VM from a pool bench runs beside it. The VMM's RSS is shown on its own.\n" +
		"Progress goes to stderr.",
	Flags: []cli.Flag{
		&cli.IntFlag{Name: "runs", Value: 3, Usage: "idle pods started, one after the other, per runtime"},
		&cli.DurationFlag{Name: "settle", Value: 3 * time.Second, Usage: "how long a pod idles before it is measured"},
		&cli.BoolFlag{Name: "json", Usage: "print the results as JSON"},
		&cli.StringSliceFlag{Name: "runtimes", Value: cli.NewStringSlice(bench.Known...), Usage: "runtimes to measure, comma-separated"},
	},
	Action: func(c *cli.Context) error {
		if c.Int("runs") < 1 {
			return errors.New("--runs must be at least 1")
		}
		return runMemBench(c, bench.RunMemory, bench.MemOptions{Runs: c.Int("runs")})
	},
}

var benchDensityCommand = &cli.Command{
	Name:  "density",
	Usage: "start N idle pods at once under each runtime: how many start, their memory, and their removal",
	Description: "Starts --pods idle containers (sleep) one after the other and keeps them all running,\n" +
		"then measures each pod's PSS, removes them all and checks that nothing is left.\n" +
		"Progress goes to stderr.",
	Flags: []cli.Flag{
		&cli.IntFlag{Name: "pods", Value: 20, Usage: "idle pods to run at once"},
		&cli.DurationFlag{Name: "settle", Value: 3 * time.Second, Usage: "how long the pods idle before they are measured"},
		&cli.BoolFlag{Name: "json", Usage: "print the results as JSON"},
		&cli.StringSliceFlag{Name: "runtimes", Value: cli.NewStringSlice("hull", "runc", "crun", "runsc"), Usage: "runtimes to measure, comma-separated"},
	},
	Action: func(c *cli.Context) error {
		if c.Int("pods") < 1 || c.Int("pods") > 1000 {
			return errors.New("--pods must be between 1 and 1000")
		}
		return runMemBench(c, bench.RunDensity, bench.MemOptions{Pods: c.Int("pods")})
	},
}

// runMemBench runs bench memory or density with o and prints the report.
func runMemBench(c *cli.Context, run func(context.Context, bench.MemOptions) (*bench.MemReport, error), o bench.MemOptions) error {
	if c.NArg() != 0 {
		return fmt.Errorf("%q takes no arguments", c.Command.Name)
	}
	hull, err := benchHull(c)
	if err != nil {
		return err
	}
	ctx, stop, progress := untilInterrupted(c.Context)
	defer stop()
	dir, removeScratch, err := bench.Scratch("mem")
	if err != nil {
		return err
	}
	defer removeScratch()
	o.Runtimes, o.Hull, o.Settle = c.StringSlice("runtimes"), hull, c.Duration("settle")
	o.StateDir, o.Bundle = filepath.Join(dir, "state"), filepath.Join(dir, "idle")
	o.Version, o.Progress = version, progress
	if err := os.Mkdir(o.Bundle, 0o755); err != nil {
		return err
	}
	if err := busybox.WriteBundle(o.Bundle, bench.IdleProcess, nil); err != nil {
		return fmt.Errorf("writing bundle: %w", err)
	}
	rep, err := run(ctx, o)
	return finishBench(ctx, c, rep, err)
}

// finishBench prints a benchmark's report, as text or with --json, or
// says why there is none.
func finishBench(ctx context.Context, c *cli.Context, rep interface{ WriteText(io.Writer) error }, err error) error {
	if err != nil {
		if ctx.Err() != nil {
			return cli.Exit("bench interrupted", 130)
		}
		return err
	}
	if c.Bool("json") {
		return printJSON(rep)
	}
	return rep.WriteText(os.Stdout)
}
