package bench

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"
)

// keeper is a `hull pool` that bench runs for a pooled runtime, with the
// runtime's state root, so that each of its runs claims a booted VM.
type keeper struct {
	rt   Runtime
	cmd  *exec.Cmd
	log  string
	done chan struct{}
}

// startKeeper starts a pool of one VM for rt.
func startKeeper(ctx context.Context, rt Runtime, dir string, progress io.Writer) (*keeper, error) {
	k := &keeper{rt: rt, log: filepath.Join(dir, rt.Name+"-pool.log"), done: make(chan struct{})}
	f, err := os.Create(k.log)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	k.cmd = exec.Command(rt.Argv[0], slices.Concat(rt.Argv[1:], []string{"pool", "--size", "1"}, rt.PoolFlags)...)
	k.cmd.Stdout, k.cmd.Stderr = f, f
	// SIGTERM if bench dies (SIGKILL, a panic): the pool then stops the VM
	// nobody claimed instead of keeping it for ever. bench runs no locked
	// OS threads, whose exit would send it early.
	k.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	if err := k.cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting hull pool: %w", err)
	}
	go func() {
		_ = k.cmd.Wait()
		close(k.done)
	}()
	fmt.Fprintf(progress, "%s: pool started\n", rt.Name)
	return k, nil
}

// waitReady waits until the pool has a VM nobody claimed.
func (k *keeper) waitReady(ctx context.Context) error {
	deadline := time.Now().Add(DefaultTimeout)
	for {
		b, _ := os.ReadFile(k.log)
		s := string(b)
		if strings.Count(s, " ready in ") > strings.Count(s, " claimed") {
			return nil
		}
		select {
		case <-k.done:
			return fmt.Errorf("%s: hull pool exited: %s", k.rt.Name, strings.TrimSpace(s))
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: no pool vm ready within %s: %s", k.rt.Name, DefaultTimeout, strings.TrimSpace(s))
		}
	}
}

// stop stops the pool, which stops the VM nobody claimed.
func (k *keeper) stop() {
	_ = k.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-k.done:
	case <-time.After(30 * time.Second):
		_ = k.cmd.Process.Kill()
		<-k.done
	}
}
