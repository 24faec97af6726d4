package main

import (
	"fmt"
	"os"
	"strings"

	"github.com/urfave/cli/v2"
	"golang.org/x/sys/unix"

	"github.com/hullrt/hull/internal/image"
	"github.com/hullrt/hull/internal/sandbox"
)

var envCommand = &cli.Command{
	Name:  "env",
	Usage: "print the effective configuration and what hull found on this host",
	Action: func(c *cli.Context) error {
		cfg, err := loadConfig(c)
		if err != nil {
			return err
		}
		src := cfg.Path
		if src == "" {
			src = "built-in defaults"
		}
		fmt.Printf("# configuration: %s\n", src)
		if err := cfg.Encode(os.Stdout); err != nil {
			return err
		}
		var u unix.Utsname
		_ = unix.Uname(&u)
		accel, aerr := sandbox.Accel(cfg)
		ch, cerr := sandbox.Channel(cfg)
		fmt.Printf("\n[host]\n")
		fmt.Printf("kernel = %q\n", unix.ByteSliceToString(u.Release[:]))
		fmt.Printf("accel = %q\n", orError(string(accel), aerr))
		fmt.Printf("channel = %q\n", orError(string(ch), cerr))
		fmt.Printf("guest_kernel_params = %q\n", strings.Join(sandbox.KernelParams(cfg, accel), " "))
		fmt.Printf("\n[guest_image]\n")
		if img, err := image.Load(cfg.Image.Dir); err == nil {
			fmt.Printf("kernel_version = %q\nkernel = %q\ninitrd = %q\ndigest = %q\n", img.KernelVersion, img.Kernel, img.Initrd, img.Digest)
		} else {
			fmt.Printf("# not built: %v\n", err)
		}
		return nil
	},
}

func orError(v string, err error) string {
	if err != nil {
		return "error: " + err.Error()
	}
	return v
}
