package test

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hullrt/hull/internal/sandbox"
)

// A pool started with --template boots one VM, saves it, and starts its
// VMs as clones of it. Each clone that a run claims has the host's time
// (the template's clock stood still) and a random number generator of its
// own (every clone starts with the template's state); the template goes
// away with the pool.
func TestPoolTemplate(t *testing.T) {
	e := requireEnv(t)
	imageDir := os.Getenv("HULL_TEST_IMAGE_9P_DIR") // clones need 9p
	if imageDir == "" {
		t.Skip("HULL_TEST_IMAGE_9P_DIR not set: templates need an image with 9p (make image-9p)")
	}
	t.Parallel()
	// A copy: TestRunVirtio9P rebuilds the image in imageDir meanwhile,
	// and a pool's VMs only serve claimers of the same image files.
	own := t.TempDir()
	for _, f := range []string{"vmlinuz", "initrd.img"} {
		b, err := os.ReadFile(filepath.Join(imageDir, f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(own, f), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	h := newHull(t, e, ninePConfig(own))
	poolLog, stop := startPool(t, h, "--size", "1", "--template")
	tmpl := sandbox.TemplateDir(h.root)

	b := makeBundle(t, []string{"sh", "-c", "date +%s; head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \\n'; echo"}, nil)
	var randoms []string
	for i := 1; i <= 2; i++ {
		waitFor(t, "a pool vm ready", 2*time.Minute, func() bool { return strings.Count(poolLog(), "ready in") >= i })
		if i == 1 {
			if !strings.Contains(poolLog(), "template saved") {
				t.Fatalf("no template saved; pool log:\n%s", poolLog())
			}
			if fi, err := os.Stat(filepath.Join(tmpl, "ram")); err != nil || fi.Size() == 0 {
				t.Fatalf("the template's memory file: %v", err)
			}
		}
		r := h.run(t, nil, "run", "--bundle", b, "clone"+strconv.Itoa(i))
		if r.code != 0 {
			t.Fatalf("run %d: exit %d: %s", i, r.code, r.stderr)
		}
		if got := strings.Count(poolLog(), "claimed"); got != i {
			t.Fatalf("run %d did not claim a clone (%d claims); pool log:\n%s", i, got, poolLog())
		}
		out := strings.Fields(r.stdout)
		if len(out) != 2 {
			t.Fatalf("run %d printed %q", i, r.stdout)
		}
		guest, _ := strconv.ParseInt(out[0], 10, 64)
		if d := time.Since(time.Unix(guest, 0)); d < -time.Minute || d > time.Minute {
			t.Errorf("run %d: the clone's clock is %s off the host's", i, d)
		}
		randoms = append(randoms, out[1])
	}
	t.Logf("16 random bytes in each clone: %q", randoms)
	if randoms[0] == randoms[1] || len(randoms[0]) != 32 {
		t.Errorf("two clones read %q from /dev/urandom: the generator was not reseeded", randoms)
	}
	stop()
	t.Logf("pool log:\n%s", poolLog())
	if !strings.Contains(poolLog(), "pool: stopped") {
		t.Errorf("the pool did not stop cleanly")
	}
	if _, err := os.Stat(tmpl); !os.IsNotExist(err) {
		t.Errorf("the template %s outlived the pool: %v", tmpl, err)
	}
}
