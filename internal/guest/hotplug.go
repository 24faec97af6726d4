package guest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	agent "github.com/hullrt/hull/api/agent/v1"
)

// Upper bounds of an OnlineCPUMem request: QEMU's x86 limit of CPUs, and
// 16 TiB of memory.
const (
	maxOnlineCPUs      = 4096
	maxOnlineMemoryMiB = 16 << 20
)

// sysfs is where the guest's CPUs and memory blocks appear; a variable so
// that the tests can give it a directory of their own.
var sysfs = "/sys/devices/system"

// hotplugPoll is how often OnlineCPUMem looks for devices that the ACPI
// hot-plug handler has not added yet.
const hotplugPoll = 5 * time.Millisecond

func (a *Agent) OnlineCPUMem(ctx context.Context, r *agent.OnlineCPUMemRequest) (*agent.OnlineCPUMemResponse, error) {
	if r.Cpus > maxOnlineCPUs || r.MemoryMib > maxOnlineMemoryMiB {
		return nil, status.Errorf(codes.InvalidArgument, "asked for %d cpus and %d MiB: more than a guest can have", r.Cpus, r.MemoryMib)
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
	}
	got, err := onlineUntil(ctx, sysfs, int(r.Cpus), r.MemoryMib)
	if err != nil {
		return nil, err
	}
	return &agent.OnlineCPUMemResponse{Cpus: uint32(got.cpus), MemoryMib: got.memMiB}, nil
}

type online struct {
	cpus   int
	memMiB uint64
}

// onlineUntil onlines every offline CPU and memory block under root, again
// and again as the hot-plug handler adds them, until cpus and memMiB are
// online or ctx ends.
func onlineUntil(ctx context.Context, root string, cpus int, memMiB uint64) (online, error) {
	for {
		got, err := onlineAll(root)
		if err != nil {
			return got, status.Errorf(codes.Internal, "onlining cpus and memory: %v", err)
		}
		if got.cpus >= cpus && got.memMiB >= memMiB {
			return got, nil
		}
		select {
		case <-ctx.Done():
			return got, status.Errorf(codes.DeadlineExceeded, "%d cpus and %d MiB online, want %d and %d", got.cpus, got.memMiB, cpus, memMiB)
		case <-time.After(hotplugPoll):
		}
	}
}

// onlineAll onlines what is offline and counts what is online.
func onlineAll(root string) (online, error) {
	var got online
	cpus, err := filepath.Glob(filepath.Join(root, "cpu", "cpu[0-9]*"))
	if err != nil {
		return got, err
	}
	for _, dir := range cpus {
		// cpu0 cannot go offline on x86 and has no online file.
		up, err := setOnline(filepath.Join(dir, "online"), "1", "1")
		if err != nil {
			return got, err
		}
		if up {
			got.cpus++
		}
	}
	raw, err := os.ReadFile(filepath.Join(root, "memory", "block_size_bytes"))
	if errors.Is(err, os.ErrNotExist) {
		return got, nil // a kernel without memory hot-plug
	}
	if err != nil {
		return got, err
	}
	blockSize, err := strconv.ParseUint(strings.TrimSpace(string(raw)), 16, 64)
	if err != nil || blockSize == 0 {
		return got, fmt.Errorf("memory block size %q", raw)
	}
	blocks, err := filepath.Glob(filepath.Join(root, "memory", "memory[0-9]*"))
	if err != nil {
		return got, err
	}
	var bytes uint64
	for _, dir := range blocks {
		up, err := setOnline(filepath.Join(dir, "state"), "online", "online")
		if err != nil {
			return got, err
		}
		if up {
			bytes += blockSize
		}
	}
	got.memMiB = bytes >> 20
	return got, nil
}

// setOnline reports whether the device whose state file is path is online,
// writing value to bring it up when it is not. A missing file means a
// device that is always online.
func setOnline(path, onlineState, value string) (bool, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return true, nil
	}
	if err != nil {
		return false, err
	}
	if strings.TrimSpace(string(b)) == onlineState {
		return true, nil
	}
	if err := os.WriteFile(path, []byte(value), 0); err != nil {
		// The kernel may have onlined it by itself meanwhile.
		if b, rerr := os.ReadFile(path); rerr == nil && strings.TrimSpace(string(b)) == onlineState {
			return true, nil
		}
		return false, fmt.Errorf("onlining %s: %w", filepath.Dir(path), err)
	}
	return true, nil
}
