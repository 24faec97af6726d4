package guest

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	agent "github.com/hullrt/hull/api/agent/v1"
)

// fakeSysfs lays out cpus (cpu0 without an online file, the others with
// the given state) and 128 MiB memory blocks with the given states.
func fakeSysfs(t *testing.T, cpus []string, blocks []string) string {
	t.Helper()
	root := t.TempDir()
	write := func(rel, body string) {
		p := filepath.Join(root, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for i, st := range cpus {
		if i == 0 {
			write("cpu/cpu0/topology/core_id", "0\n")
			continue
		}
		write(filepath.Join("cpu", "cpu"+itoa(i), "online"), st+"\n")
	}
	write("cpu/cpufreq/ondemand", "")
	write("memory/block_size_bytes", "8000000\n")
	for i, st := range blocks {
		write(filepath.Join("memory", "memory"+itoa(i), "state"), st+"\n")
	}
	return root
}

func itoa(i int) string { return string(rune('0' + i)) }

func TestOnlineAll(t *testing.T) {
	root := fakeSysfs(t, []string{"", "1", "0"}, []string{"online", "online", "offline", "going-offline"})
	got, err := onlineAll(root)
	if err != nil {
		t.Fatal(err)
	}
	if got.cpus != 3 || got.memMiB != 4*128 {
		t.Errorf("online: %+v, want 3 cpus and 512 MiB", got)
	}
	b, _ := os.ReadFile(filepath.Join(root, "cpu/cpu2/online"))
	if string(b) != "1" {
		t.Errorf("cpu2/online = %q, want 1 written", b)
	}
	b, _ = os.ReadFile(filepath.Join(root, "memory/memory2/state"))
	if string(b) != "online" {
		t.Errorf("memory2/state = %q, want online written", b)
	}
}

func TestOnlineUntilWaitsForHotplug(t *testing.T) {
	root := fakeSysfs(t, []string{""}, []string{"online"})
	// The "ACPI handler" adds a CPU and a memory block a little later.
	go func() {
		time.Sleep(20 * time.Millisecond)
		_ = os.MkdirAll(filepath.Join(root, "cpu/cpu1"), 0o755)
		_ = os.WriteFile(filepath.Join(root, "cpu/cpu1/online"), []byte("0\n"), 0o644)
		_ = os.MkdirAll(filepath.Join(root, "memory/memory1"), 0o755)
		_ = os.WriteFile(filepath.Join(root, "memory/memory1/state"), []byte("offline\n"), 0o644)
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	got, err := onlineUntil(ctx, root, 2, 256)
	if err != nil || got.cpus != 2 || got.memMiB != 256 {
		t.Fatalf("onlineUntil: %+v, %v", got, err)
	}
}

func TestOnlineUntilDeadline(t *testing.T) {
	root := fakeSysfs(t, []string{""}, []string{"online"})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
	defer cancel()
	_, err := onlineUntil(ctx, root, 2, 128)
	if status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("err %v, want DeadlineExceeded", err)
	}
}

func TestOnlineCPUMemRejectsAbsurdRequests(t *testing.T) {
	a := &Agent{}
	for _, r := range []struct{ cpus, mem uint64 }{{maxOnlineCPUs + 1, 0}, {1, maxOnlineMemoryMiB + 1}} {
		_, err := a.OnlineCPUMem(context.Background(), onlineReq(r.cpus, r.mem))
		if status.Code(err) != codes.InvalidArgument {
			t.Errorf("%+v: err %v, want InvalidArgument", r, err)
		}
	}
}

func onlineReq(cpus, mem uint64) *agent.OnlineCPUMemRequest {
	return &agent.OnlineCPUMemRequest{Cpus: uint32(cpus), MemoryMib: mem}
}
