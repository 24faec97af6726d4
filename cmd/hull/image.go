package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/hullrt/hull/internal/config"
	"github.com/hullrt/hull/internal/image"
)

var imageCommand = &cli.Command{
	Name:  "image",
	Usage: "manage the guest image (kernel + initrd with the agent)",
	Subcommands: []*cli.Command{{
		Name:  "build",
		Usage: "build the guest image from an installed kernel and the hull-agent binary",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "kernel-version", Usage: "installed kernel to use (default: image.kernel_version, else the newest cloud kernel)"},
			&cli.StringFlag{Name: "kernel", Usage: `a kernel file with everything built in, instead of an installed kernel: "tuned" for the one 'hull image kernel' built, or a bzImage or vmlinux with its config beside it (default: image.kernel)`},
			&cli.StringFlag{Name: "agent", Usage: "hull-agent binary (default: image.agent, else next to hull)"},
			&cli.StringFlag{Name: "output", Usage: "output directory (default: image.dir)"},
			&cli.StringFlag{Name: "shared-fs", Usage: "shared filesystem the guest must mount, virtio-fs or virtio-9p; without --kernel-version it picks the kernel (default: storage.shared_fs)"},
			&cli.BoolFlag{Name: "force", Usage: "rebuild even if the image is up to date"},
		},
		Action: func(c *cli.Context) error {
			cfg, err := loadConfig(c)
			if err != nil {
				return err
			}
			o := image.Options{
				KernelVersion: firstNonEmpty(c.String("kernel-version"), cfg.Image.KernelVersion),
				KernelPath:    firstNonEmpty(c.String("kernel"), cfg.Image.Kernel),
				AgentPath:     firstNonEmpty(c.String("agent"), agentPath(cfg)),
				OutputDir:     firstNonEmpty(c.String("output"), cfg.Image.Dir),
				SharedFS:      firstNonEmpty(c.String("shared-fs"), cfg.Storage.SharedFS),
				Force:         c.Bool("force"),
				Progress:      os.Stderr,
			}
			// Either flag overrides both keys of the configuration.
			if c.IsSet("kernel") || c.IsSet("kernel-version") {
				o.KernelPath, o.KernelVersion = c.String("kernel"), c.String("kernel-version")
			}
			if o.KernelPath == "tuned" {
				k, err := image.FindKernel(image.KernelBuildOptions{})
				if err != nil {
					return fmt.Errorf("building guest image: %w", err)
				}
				o.KernelPath = k.BzImage
			}
			img, err := image.Build(c.Context, o)
			if err != nil {
				return fmt.Errorf("building guest image: %w", err)
			}
			state := "built"
			if img.Cached {
				state = "up to date"
			}
			fmt.Printf("guest image %s: kernel %s\n  kernel: %s\n  initrd: %s\n  digest: %s\n  shared filesystems: %s\n",
				state, img.KernelVersion, img.Kernel, img.Initrd, img.Digest, strings.Join(img.SharedFS, ", "))
			return nil
		},
	}, imageKernelCommand},
}

// agentPath is the hull-agent binary to put into the image.
func agentPath(cfg *config.Config) string {
	if cfg.Image.AgentPath != "" {
		return cfg.Image.AgentPath
	}
	exe, err := os.Executable()
	if err != nil {
		return "hull-agent"
	}
	return filepath.Join(filepath.Dir(exe), "hull-agent")
}

func firstNonEmpty(v ...string) string {
	for _, s := range v {
		if s != "" {
			return s
		}
	}
	return ""
}
