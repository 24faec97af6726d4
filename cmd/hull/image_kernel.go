package main

import (
	"fmt"
	"os"
	"syscall"

	"github.com/urfave/cli/v2"

	"github.com/hullrt/hull/internal/image"
)

var imageKernelCommand = &cli.Command{
	Name:  "kernel",
	Usage: "build the tuned guest kernel (everything built in, no modules) from Debian's linux-source into the kernel cache",
	Description: `Configures the kernel source with tinyconfig plus hull's fragment
(internal/image/kernel/hull.config), fails if an option of the fragment did
not make it into the final .config, and compiles it at nice 19 (5 to 15
minutes on 2 CPUs). The result is cached by the digests of the source and
the fragment: a second run with the same ones does nothing. 'hull image
build --kernel tuned' then builds an image that boots it. Each run trims
the cache to --keep kernels, removing the least recently used.
Needs scripts/install-kernel-deps.sh (make kernel-deps).`,
	Flags: []cli.Flag{
		&cli.StringFlag{Name: "source", Usage: "kernel source tarball (default: the newest " + image.DefaultSourceDir + "/linux-source-*.tar.*)"},
		&cli.StringFlag{Name: "fragment", Usage: "config fragment to use instead of hull's"},
		&cli.StringFlag{Name: "cache", Value: image.DefaultKernelCache, Usage: "kernel cache directory"},
		&cli.IntFlag{Name: "jobs", Aliases: []string{"j"}, DefaultText: "one per CPU", Usage: "parallel compile jobs"},
		&cli.BoolFlag{Name: "force", Usage: "rebuild even if the cache has this kernel"},
		&cli.IntFlag{Name: "keep", Value: image.DefaultKernelCacheKeep, Usage: "kernels the cache keeps: this one and the most recently used others (built, or used by 'hull image build'); 0 keeps all"},
	},
	Action: func(c *cli.Context) error {
		if c.Int("keep") < 0 {
			return fmt.Errorf("--keep %d: must be 0 (keep all) or more", c.Int("keep"))
		}
		o := image.KernelBuildOptions{
			Source:   c.String("source"),
			CacheDir: c.String("cache"),
			Jobs:     c.Int("jobs"),
			Force:    c.Bool("force"),
			Keep:     c.Int("keep"),
		}
		if f := c.String("fragment"); f != "" {
			b, err := os.ReadFile(f)
			if err != nil {
				return fmt.Errorf("config fragment: %w", err)
			}
			o.Fragment = b
		}
		// ^C stops the compilers and removes the half-built tree.
		ctx, stop, progress := untilInterrupted(c.Context, syscall.SIGHUP)
		defer stop()
		o.Progress = progress
		k, err := image.BuildKernel(ctx, o)
		if err != nil {
			if ctx.Err() != nil && c.Context.Err() == nil {
				return fmt.Errorf("building the guest kernel: interrupted")
			}
			return fmt.Errorf("building the guest kernel: %w", err)
		}
		state := "built"
		if k.Cached {
			state = "up to date"
		}
		fmt.Printf("tuned kernel %s: %s\n  bzImage: %s\n  vmlinux: %s (PVH entry)\n  config:  %s\n  source:  %s %s\n",
			state, k.Release, k.BzImage, k.Vmlinux, k.Config, k.Source, k.SourceVersion)
		return nil
	},
}
