package pool

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// fakeVMs boots and destroys VMs that are only records.
type fakeVMs struct {
	mu        sync.Mutex
	booted    int
	destroyed []string
}

func (f *fakeVMs) boot(ctx context.Context) (*VM, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.booted++
	return &VM{Dir: fmt.Sprintf("/run/hull/pool/vm%d", f.booted), QEMUPid: 1000 + f.booted, VCPUs: 1, MemoryMiB: 512}, nil
}

func (f *fakeVMs) destroy(vm *VM) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.destroyed = append(f.destroyed, vm.Dir)
	return nil
}

func startKeeper(t *testing.T, size int) (*Keeper, *fakeVMs, string, func()) {
	t.Helper()
	return startKeeperDelayed(t, size, 0)
}

func startKeeperDelayed(t *testing.T, size int, refillDelay time.Duration) (*Keeper, *fakeVMs, string, func()) {
	t.Helper()
	f := &fakeVMs{}
	k := &Keeper{Size: size, Key: "k1", Boot: f.boot, Destroy: f.destroy, RefillDelay: refillDelay}
	sock := filepath.Join(t.TempDir(), "pool.sock")
	l, err := Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- k.Run(ctx, l) }()
	stop := func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}
	waitReady(t, k, size)
	return k, f, sock, stop
}

func waitReady(t *testing.T, k *Keeper, n int) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); k.Ready() < n; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d vms ready, want %d", k.Ready(), n)
		}
	}
}

func TestClaimAndRefill(t *testing.T) {
	k, f, sock, stop := startKeeper(t, 2)
	vm, err := Claim(context.Background(), sock, "k1")
	if err != nil || vm.Dir != "/run/hull/pool/vm1" || vm.QEMUPid != 1001 {
		t.Fatalf("claim: %+v, %v", vm, err)
	}
	waitReady(t, k, 2) // a replacement is booted
	if _, err := Claim(context.Background(), sock, "other-config"); !errors.Is(err, ErrEmpty) {
		t.Errorf("claim of another configuration: %v, want ErrEmpty", err)
	}
	stop()
	if len(f.destroyed) != 2 || f.booted != 3 {
		t.Errorf("after stop: booted %d, destroyed %v; want 3 booted and the 2 unclaimed destroyed", f.booted, f.destroyed)
	}
}

func (f *fakeVMs) bootCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.booted
}

// A claim holds the refill back for RefillDelay, however fast a boot is.
func TestRefillWaitsForClaimsToQuieten(t *testing.T) {
	_, f, sock, stop := startKeeperDelayed(t, 1, time.Hour)
	defer stop()
	if _, err := Claim(context.Background(), sock, "k1"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	if n := f.bootCount(); n != 1 {
		t.Errorf("%d vms booted within 200ms of a claim, want 1 (no refill for an hour)", n)
	}
}

func TestRefillAfterTheDelay(t *testing.T) {
	k, f, sock, stop := startKeeperDelayed(t, 1, 50*time.Millisecond)
	defer stop()
	if _, err := Claim(context.Background(), sock, "k1"); err != nil {
		t.Fatal(err)
	}
	waitReady(t, k, 1)
	if n := f.bootCount(); n != 2 {
		t.Errorf("%d vms booted, want 2 (the first and its replacement)", n)
	}
}

func TestClaimEmptyPool(t *testing.T) {
	_, _, sock, stop := startKeeper(t, 0)
	defer stop()
	if _, err := Claim(context.Background(), sock, "k1"); !errors.Is(err, ErrEmpty) {
		t.Errorf("claim from an empty pool: %v, want ErrEmpty", err)
	}
}

func TestClaimWithoutPool(t *testing.T) {
	if _, err := Claim(context.Background(), filepath.Join(t.TempDir(), "none.sock"), "k1"); !errors.Is(err, ErrNoPool) {
		t.Errorf("claim without a keeper: %v, want ErrNoPool", err)
	}
}

func TestListenRefusesARunningKeeper(t *testing.T) {
	_, _, sock, stop := startKeeper(t, 0)
	defer stop()
	if _, err := Listen(sock); err == nil {
		t.Error("a second keeper took over the socket")
	}
}
