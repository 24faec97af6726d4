package pool

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Keeper keeps Size VMs of configuration Key booted and hands them out.
type Keeper struct {
	Size int
	Key  string
	// Boot boots one empty VM and lets go of it (no connection held), so
	// that a claimer can adopt it.
	Boot func(ctx context.Context) (*VM, error)
	// Destroy stops a VM nobody claimed.
	Destroy func(*VM) error
	// Log receives a line per VM booted, claimed or lost.
	Log io.Writer
	// RefillDelay holds a replacement back until no VM has been claimed
	// for this long: a boot beside a claimed VM's first container slows
	// that container's start, which is what the pool is for.
	RefillDelay time.Duration

	mu        sync.Mutex
	ready     []*VM
	lastClaim time.Time
	wake      chan struct{}
}

// Listen listens on socket, refusing to take it over from a keeper that
// still answers there.
func Listen(socket string) (net.Listener, error) {
	if c, err := net.Dial("unix", socket); err == nil {
		c.Close()
		return nil, fmt.Errorf("a vm pool already serves %s", socket)
	}
	_ = os.Remove(socket)
	l, err := net.Listen("unix", socket)
	if err != nil {
		return nil, err
	}
	if err := os.Chmod(socket, 0o600); err != nil {
		l.Close()
		return nil, err
	}
	return l, nil
}

// Run fills the pool and serves claims on l until ctx ends; then it
// destroys the VMs nobody claimed and closes l.
func (k *Keeper) Run(ctx context.Context, l net.Listener) error {
	k.wake = make(chan struct{}, 1)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		k.fill(ctx)
	}()
	go func() {
		<-ctx.Done()
		l.Close()
	}()
	var err error
	for {
		conn, aerr := l.Accept()
		if aerr != nil {
			if ctx.Err() == nil {
				err = aerr
			}
			break
		}
		go k.serve(conn)
	}
	wg.Wait()
	k.mu.Lock()
	left := k.ready
	k.ready = nil
	k.mu.Unlock()
	for _, vm := range left {
		if derr := k.Destroy(vm); derr != nil {
			k.logf("destroying %s: %v", vm.Dir, derr)
		}
	}
	return err
}

// Ready is how many VMs wait to be claimed.
func (k *Keeper) Ready() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return len(k.ready)
}

// fill boots VMs, one at a time, while fewer than Size are ready.
func (k *Keeper) fill(ctx context.Context) {
	backoff := time.Second
	for ctx.Err() == nil {
		if k.Ready() >= k.Size {
			select {
			case <-k.wake:
			case <-ctx.Done():
			}
			continue
		}
		if wait := k.quietFor(); wait > 0 {
			select {
			case <-time.After(wait):
			case <-ctx.Done():
			}
			continue
		}
		start := time.Now()
		vm, err := k.Boot(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			k.logf("booting a vm: %v (next try in %s)", err, backoff)
			select {
			case <-time.After(backoff):
			case <-ctx.Done():
			}
			backoff = min(2*backoff, 30*time.Second)
			continue
		}
		backoff = time.Second
		k.mu.Lock()
		k.ready = append(k.ready, vm)
		n := len(k.ready)
		k.mu.Unlock()
		k.logf("vm %s ready in %s (%d/%d)", vm.Dir, time.Since(start).Round(time.Millisecond), n, k.Size)
	}
}

// quietFor is how long a refill still waits for claims to quieten down.
func (k *Keeper) quietFor() time.Duration {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.lastClaim.IsZero() {
		return 0
	}
	return time.Until(k.lastClaim.Add(k.RefillDelay))
}

func (k *Keeper) serve(conn net.Conn) {
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	if err := peerAllowed(conn); err != nil {
		_ = json.NewEncoder(conn).Encode(response{Error: err.Error()})
		return
	}
	var req request
	if err := json.NewDecoder(bufio.NewReader(conn)).Decode(&req); err != nil {
		_ = json.NewEncoder(conn).Encode(response{Error: "bad request: " + err.Error()})
		return
	}
	if req.Key != k.Key {
		k.logf("claim for another configuration (%s; the pool's is %s)", req.Key, k.Key)
		_ = json.NewEncoder(conn).Encode(response{Empty: true})
		return
	}
	k.mu.Lock()
	if len(k.ready) == 0 {
		k.mu.Unlock()
		_ = json.NewEncoder(conn).Encode(response{Empty: true})
		return
	}
	vm := k.ready[0]
	k.ready = k.ready[1:]
	k.lastClaim = time.Now()
	k.mu.Unlock()
	if err := json.NewEncoder(conn).Encode(response{VM: vm}); err != nil {
		// The claimer went away before it had the VM: keep it.
		k.mu.Lock()
		k.ready = append(k.ready, vm)
		k.mu.Unlock()
		return
	}
	k.logf("vm %s claimed", vm.Dir)
	select {
	case k.wake <- struct{}{}:
	default:
	}
}

// peerAllowed refuses clients other than root and the keeper's own user: a
// claimed VM is a running QEMU with the keeper's rights on its files.
func peerAllowed(conn net.Conn) error {
	uc, ok := conn.(*net.UnixConn)
	if !ok {
		return errors.New("not a unix socket")
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return err
	}
	var cred *unix.Ucred
	var cerr error
	if err := raw.Control(func(fd uintptr) {
		cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return err
	}
	if cerr != nil {
		return cerr
	}
	if cred.Uid != 0 && int(cred.Uid) != os.Geteuid() {
		return fmt.Errorf("uid %d may not claim vms", cred.Uid)
	}
	return nil
}

func (k *Keeper) logf(format string, args ...any) {
	if k.Log != nil {
		fmt.Fprintf(k.Log, "pool: "+format+"\n", args...)
	}
}
