package main

import (
	"context"
	"errors"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/hullrt/hull/internal/stdio"
)

// untilInterrupted returns a context for a long-running command that ends
// on ^C, SIGTERM and any extra signals, so that the command stops its work
// and still removes what it set up, and the writer its progress should go
// to: stderr, which also ends the context when a write to it fails because
// its reader went away (`hull bench start 2>&1 | head`).
//
// Without this a broken pipe on stdout or stderr kills a Go program with
// SIGPIPE at once, before it can stop a pool or unmount its scratch space
// (see stdio.CatchSIGPIPE).
func untilInterrupted(parent context.Context, extra ...os.Signal) (context.Context, context.CancelFunc, io.Writer) {
	stdio.CatchSIGPIPE()
	ctx, stop := signal.NotifyContext(parent, append([]os.Signal{os.Interrupt, syscall.SIGTERM}, extra...)...)
	return ctx, stop, endOnEPIPE{w: os.Stderr, end: stop}
}

// endOnEPIPE writes to w, and calls end when a write finds no reader.
type endOnEPIPE struct {
	w   io.Writer
	end func()
}

func (e endOnEPIPE) Write(p []byte) (int, error) {
	n, err := e.w.Write(p)
	if errors.Is(err, syscall.EPIPE) {
		e.end()
	}
	return n, err
}
