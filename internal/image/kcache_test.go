package image

import (
	"bytes"
	"context"
	"os"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestKernelCachePrune(t *testing.T) {
	o := fakeKernelOptions(t, "CONFIG_64BIT=y\n")
	build := func(extra string, keep int) (*Kernel, string) {
		t.Helper()
		var progress bytes.Buffer
		o.Fragment = []byte("CONFIG_64BIT=y\n" + extra)
		o.Keep, o.Progress = keep, &progress
		k, err := BuildKernel(context.Background(), o)
		if err != nil {
			t.Fatal(err)
		}
		return k, progress.String()
	}
	entries := func() []string {
		t.Helper()
		names := cacheFiles(t, o.CacheDir)
		slices.Sort(names)
		return names
	}
	name := func(ks ...*Kernel) []string {
		var names []string
		for _, k := range ks {
			names = append(names, k.Key[:16])
		}
		slices.Sort(names)
		return names
	}
	// Entry times are what orders them: a second apart, oldest first.
	age := func(k *Kernel, ago time.Duration) {
		t.Helper()
		at := time.Now().Add(-ago)
		if err := os.Chtimes(k.Dir, at, at); err != nil {
			t.Fatal(err)
		}
	}

	a, _ := build("", 0)
	age(a, 3*time.Second)
	b, _ := build("CONFIG_NET=y\n", 0)
	age(b, 2*time.Second)
	c, _ := build("CONFIG_TTY=y\n", 0)
	age(c, time.Second)
	if got := entries(); !slices.Equal(got, name(a, b, c)) {
		t.Fatalf("keep 0: cache %v, want all three %v", got, name(a, b, c))
	}

	// FindKernel of the oldest makes it the most recently used.
	o.Fragment = []byte("CONFIG_64BIT=y\n")
	if _, err := FindKernel(o); err != nil {
		t.Fatal(err)
	}
	// A new kernel, keep 2: it stays, with a; b and c go.
	d, progress := build("CONFIG_PCI=y\n", 2)
	if got := entries(); !slices.Equal(got, name(a, d)) {
		t.Errorf("keep 2: cache %v, want %v", got, name(a, d))
	}
	for _, k := range []*Kernel{b, c} {
		if !strings.Contains(progress, "removed an older cached kernel: "+k.Dir) {
			t.Errorf("progress does not name %s:\n%s", k.Dir, progress)
		}
	}
	// A cache hit prunes too; keep 1 is only the kernel asked for.
	if k, _ := build("", 1); !k.Cached || k.Dir != a.Dir {
		t.Fatalf("cache hit: %+v", k)
	}
	if got := entries(); !slices.Equal(got, name(a)) {
		t.Errorf("keep 1: cache %v, want %v", got, name(a))
	}
	if extra := cacheLeftovers(t, o.CacheDir); len(extra) > 0 {
		t.Errorf("cache holds leftovers: %v", extra)
	}
}
