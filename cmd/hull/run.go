package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/urfave/cli/v2"
	"golang.org/x/term"

	"github.com/hullrt/hull/internal/config"
	"github.com/hullrt/hull/internal/oci"
	"github.com/hullrt/hull/internal/sandbox"
)

var runCommand = &cli.Command{
	Name:      "run",
	Usage:     "create and run a container in a new VM, relaying its stdio, and exit with its exit code",
	ArgsUsage: "<container-id>",
	Flags: []cli.Flag{
		&cli.StringFlag{Name: "bundle", Aliases: []string{"b"}, Value: ".", Usage: "path to the OCI bundle"},
	},
	Action: func(c *cli.Context) error {
		id, err := oneArg(c, "container id")
		if err != nil {
			return err
		}
		if err := oci.ValidateID(id); err != nil {
			return err
		}
		cfg, err := loadConfig(c)
		if err != nil {
			return err
		}
		b, err := oci.Load(c.String("bundle"))
		if err != nil {
			return err
		}
		status, err := run(cfg, id, b)
		if err != nil {
			return err
		}
		return cli.Exit("", status)
	},
}

// forwardedSignals are relayed to the container's process; the rest keep
// their default meaning for hull itself.
var forwardedSignals = []os.Signal{
	syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGQUIT,
	syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGCONT, syscall.SIGALRM,
}

func run(cfg *config.Config, id string, b *oci.Bundle) (int, error) {
	sigc := make(chan os.Signal, 16)
	signal.Notify(sigc, forwardedSignals...)
	defer signal.Stop(sigc)

	// A signal during boot cancels the boot: there is no process yet to
	// give it to.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	booted := make(chan struct{})
	interrupted := make(chan syscall.Signal, 1)
	go func() {
		select {
		case s := <-sigc:
			logrus.Debugf("%v during boot: tearing down", s)
			interrupted <- s.(syscall.Signal)
			cancel()
		case <-booted:
		}
	}()
	// A boot cut short by a signal exits as if that signal had ended the
	// container, as a shell expects of an interrupted command.
	bootErr := func(err error) (int, error) {
		select {
		case sig := <-interrupted:
			return 0, cli.Exit(fmt.Sprintf("interrupted by %v while starting the container", sig), 128+int(sig))
		default:
			return 0, err
		}
	}

	sb, err := sandbox.Create(ctx, cfg, id)
	if err != nil {
		return bootErr(err)
	}
	defer func() {
		t := time.Now()
		sb.Destroy(context.Background())
		logrus.Debugf("phase %-16s %v", "teardown", time.Since(t))
	}()
	for _, p := range sb.Phases {
		logrus.Debugf("phase %-16s %v", p.Name, p.Duration)
	}
	t := time.Now()
	if err := sb.CreateContainer(ctx, id, b); err != nil {
		return bootErr(err)
	}
	logrus.Debugf("phase %-16s %v", "create-container", time.Since(t))
	close(booted)
	if ctx.Err() != nil {
		return bootErr(ctx.Err())
	}

	terminal := b.Spec.Process.Terminal
	if terminal && term.IsTerminal(int(os.Stdin.Fd())) {
		old, err := term.MakeRaw(int(os.Stdin.Fd()))
		if err == nil {
			defer term.Restore(int(os.Stdin.Fd()), old)
		}
		go relayWinch(ctx, sb, id)
	}

	var outputs sync.WaitGroup
	copyOut := func(stderr bool, w io.Writer) {
		defer outputs.Done()
		if err := sb.Agent.CopyOut(ctx, id, "", stderr, w); err != nil && ctx.Err() == nil {
			logrus.WithError(err).Debug("copying container output")
		}
	}
	outputs.Add(2)
	go copyOut(false, os.Stdout)
	go copyOut(true, os.Stderr)
	go func() {
		if err := sb.Agent.CopyIn(ctx, id, "", os.Stdin); err != nil && ctx.Err() == nil {
			logrus.WithError(err).Debug("copying stdin")
		}
	}()

	t = time.Now()
	if err := sb.Agent.StartContainer(ctx, id); err != nil {
		return 0, fmt.Errorf("starting container: %w", err)
	}
	logrus.Debugf("phase %-16s %v", "start-container", time.Since(t))
	t = time.Now()
	go func() {
		for s := range sigc {
			if err := sb.Agent.Signal(ctx, id, "", uint32(s.(syscall.Signal)), false); err != nil {
				logrus.WithError(err).Debugf("forwarding %v", s)
			}
		}
	}()

	type result struct {
		status int
		err    error
	}
	waited := make(chan result, 1)
	go func() {
		st, _, err := sb.Agent.Wait(ctx, id, "")
		waited <- result{st, err}
	}()
	select {
	case r := <-waited:
		if r.err != nil {
			return 0, fmt.Errorf("waiting for container: %w", r.err)
		}
		outputs.Wait()
		logrus.Debugf("phase %-16s %v", "run-to-exit", time.Since(t))
		return r.status, nil
	case <-sb.Done():
		return 0, errors.New("vm exited unexpectedly")
	}
}

func relayWinch(ctx context.Context, sb *sandbox.Sandbox, id string) {
	winch := make(chan os.Signal, 1)
	signal.Notify(winch, syscall.SIGWINCH)
	defer signal.Stop(winch)
	for {
		if w, h, err := term.GetSize(int(os.Stdin.Fd())); err == nil {
			_ = sb.Agent.ResizeTTY(ctx, id, "", uint16(h), uint16(w))
		}
		select {
		case <-winch:
		case <-ctx.Done():
			return
		}
	}
}
