package bench

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/hullrt/hull/internal/container"
)

func TestSweepScratchRemovesOnlyDeadBenchmarks(t *testing.T) {
	tmp := t.TempDir()
	self, err := container.ProcessStartTime(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	mk := func(name, owner string) string {
		dir := filepath.Join(tmp, name)
		if err := os.MkdirAll(filepath.Join(dir, "state"), 0o700); err != nil {
			t.Fatal(err)
		}
		if owner != "" {
			if err := os.WriteFile(filepath.Join(dir, ownerFile), []byte(owner), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		return dir
	}
	live := mk("hull-bench-start-live", fmt.Sprintf("%d %d\n", os.Getpid(), self))
	// pid_max is at most 2^22: this pid cannot run.
	gone := mk("hull-bench-start-gone", "4194305 12\n")
	reused := mk("hull-bench-net-reused", fmt.Sprintf("%d %d\n", os.Getpid(), self+1))
	unknown := mk("hull-bench-io-unowned", "")
	garbled := mk("hull-bench-mem-garbled", "pid 12\n")
	other := mk("not-a-bench", "4194305 12\n")
	file := filepath.Join(tmp, "hull-bench-stderr-1")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}

	sweepScratch(tmp)

	for dir, want := range map[string]bool{live: true, gone: false, reused: false, unknown: true, garbled: true, other: true, file: true} {
		_, err := os.Lstat(dir)
		if exists := err == nil; exists != want {
			t.Errorf("%s: exists %v after the sweep, want %v", filepath.Base(dir), exists, want)
		}
	}
}

func TestScratchRecordsItsOwner(t *testing.T) {
	t.Setenv("TMPDIR", t.TempDir())
	dir, remove, err := Scratch("test")
	if err != nil {
		t.Fatal(err)
	}
	if staleScratch(dir) {
		t.Errorf("%s is stale while its benchmark runs", dir)
	}
	remove()
	if _, err := os.Lstat(dir); !os.IsNotExist(err) {
		t.Errorf("%s is still there after its removal: %v", dir, err)
	}
}

func TestParseOwner(t *testing.T) {
	for _, s := range []string{"", "1", "1 2 3", "-1 2", "0 2", "x 2", "1 -2", "1 y"} {
		if _, _, err := parseOwner(s); err == nil {
			t.Errorf("parseOwner(%q) accepted", s)
		}
	}
	pid, start, err := parseOwner("42 1234\n")
	if err != nil || pid != 42 || start != 1234 {
		t.Errorf("parseOwner: %d %d %v", pid, start, err)
	}
}
