// Package bench measures container start under hull and under the other
// OCI runtimes of the host, side by side on the same bundles, for
// `hull bench`.
//
// Every number is the wall time of a real `<runtime> run` as a caller
// (containerd, podman, a shell) sees it: runtimes are compared from the
// outside, not by their own accounting.
package bench

import (
	"bytes"
	"cmp"
	"context"
	"debug/elf"
	"errors"
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

// The processes of the two bundles bench runs: the first prints a line as
// soon as it starts, the second only exits.
var (
	StartProcess = []string{"sh", "-c", "echo started; exec true"}
	TrueProcess  = []string{"/bin/true"}
)

// startOutput is what StartProcess prints; anything else means the
// container did not run what it was meant to.
const startOutput = "started\n"

// Known lists the runtimes bench can measure, in its default order.
var Known = []string{"hull", "hull-pooled", "runc", "crun", "runsc"}

// Extra lists the runtimes bench measures only when asked: hull-template
// is hull-pooled with `hull pool --template`, which needs virtio-9p.
var Extra = []string{"hull-template"}

// Baseline is the runtime the others' medians are divided by.
const Baseline = "runc"

// DefaultTimeout bounds one run: a hung VM must not hang the benchmark.
const DefaultTimeout = 2 * time.Minute

// ErrNotInstalled is returned by Find for a runtime not in PATH.
var ErrNotInstalled = errors.New("not installed")

// Runtime is one OCI runtime under test.
type Runtime struct {
	Name string
	// Argv is the command line up to its "run" subcommand: the binary and
	// its global flags, --root (a state root private to the benchmark)
	// included.
	Argv []string
	// Optional runtimes whose first run fails are reported unavailable
	// rather than failing the benchmark: crun refuses cgroup v1 hybrid
	// hosts, runsc needs kernel features some hosts lack.
	Optional bool
	// Deletes says the runtime has `delete --force ID`, run after a
	// failed run so that no container outlives the benchmark.
	Deletes bool
	// Hull runs record their phases (monitor.PhaseLogEnv); Pooled ones
	// claim their VM from a `hull pool` that bench runs beside them.
	Hull, Pooled bool
	// PoolFlags are the `hull pool` flags of a pooled runtime.
	PoolFlags []string
}

// Find returns the runtime called name, keeping its state under root.
// hull is the hull command line to use (binary and global flags, without
// --root).
func Find(name, root string, hull []string) (Runtime, error) {
	rt := Runtime{Name: name}
	var flags []string
	switch name {
	case "hull", "hull-pooled", "hull-template":
		if len(hull) == 0 {
			return rt, errors.New("no hull binary given")
		}
		rt.Argv = append(slices.Clone(hull), "--root", root)
		rt.Hull, rt.Pooled = true, name != "hull"
		if name == "hull-template" {
			rt.PoolFlags = []string{"--template"}
		}
		return rt, nil
	case "runc":
	case "crun":
		rt.Optional = true
	case "runsc":
		rt.Optional = true
		flags = []string{"--platform=systrap", "--network=none"}
	default:
		return rt, fmt.Errorf("unknown runtime %q (known: %s)", name, strings.Join(slices.Concat(Known, Extra), ", "))
	}
	path, err := exec.LookPath(name)
	if err != nil {
		return rt, fmt.Errorf("%s: %w", name, ErrNotInstalled)
	}
	if name == "runsc" && dynamic(path) {
		return rt, fmt.Errorf("%s is dynamically linked, and its sandbox, chrooted without a loader, cannot re-execute it: %w", path, ErrRunscDynamic)
	}
	rt.Argv = append([]string{path, "--root", root}, flags...)
	rt.Deletes = true
	return rt, nil
}

// ErrRunscDynamic says how to build a runsc that runs.
var ErrRunscDynamic = errors.New("build it static: CGO_ENABLED=0 go install gvisor.dev/gvisor/runsc@latest")

// dynamic reports whether path is an ELF executable that needs a dynamic
// loader (has a PT_INTERP header).
func dynamic(path string) bool {
	f, err := elf.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return true
		}
	}
	return false
}

// Options says what to measure.
type Options struct {
	// Runtimes are names from Known, in the order they run and are listed.
	Runtimes []string
	// Hull is the hull command line: binary and global flags (--config).
	Hull []string
	// StateDir holds one state root per runtime; the caller removes it.
	StateDir string
	// StartBundle runs StartProcess, TrueBundle runs TrueProcess.
	StartBundle, TrueBundle string
	// Runs is the number of timed runs of each runtime and measure.
	Runs int
	// Timeout bounds each run; DefaultTimeout if zero.
	Timeout time.Duration
	// Version is hull's, for the report.
	Version string
	// Progress, if not nil, receives a line per step.
	Progress io.Writer
}

// sample is what one run of a container shows its caller.
type sample struct {
	first  time.Duration // launch to the first byte of stdout; 0 if none
	total  time.Duration // launch to exit
	stdout string
	phases []phase // hull's own account of the run
}

// measures are what bench reports, in order. Each takes one number from
// a run of its bundle.
var measures = []struct {
	name, title, about string
	bundle             func(*Options) string
	stdout             string
	pick               func(sample) time.Duration
}{
	{
		name:   "start",
		title:  "process start",
		about:  "from launching `<runtime> run` to the first byte of the container's stdout (sh -c 'echo started; exec true'), so it includes the runtime's relay of that output (hull: guest agent to host)",
		bundle: func(o *Options) string { return o.StartBundle },
		stdout: startOutput,
		pick:   func(s sample) time.Duration { return s.first },
	},
	{
		name:   "true",
		title:  "total run of /bin/true",
		about:  "wall time of `<runtime> run` of busybox true, from launch to exit",
		bundle: func(o *Options) string { return o.TrueBundle },
		stdout: "",
		pick:   func(s sample) time.Duration { return s.total },
	},
}

// Run measures every measure under every available runtime: one untimed
// warm-up run each, then o.Runs timed rounds that interleave the runtimes
// so that noise on the machine hits them alike. A failing run is an error,
// except the first run of an optional runtime, which makes it unavailable.
func Run(ctx context.Context, o Options) (*Report, error) {
	if o.Runs < 1 {
		return nil, errors.New("runs must be at least 1")
	}
	b := &bencher{opts: &o, timeout: cmp.Or(o.Timeout, DefaultTimeout), progress: o.Progress}
	if b.progress == nil {
		b.progress = io.Discard
	}
	rep := &Report{Machine: DetectMachine(), Version: o.Version, Date: time.Now(), Runs: o.Runs}

	found, missing, err := findAll(o.Runtimes, o.StateDir, o.Hull)
	if err != nil {
		return nil, err
	}
	rep.Unavailable = missing

	for _, rt := range found {
		if rt.Pooled {
			k, err := startKeeper(ctx, rt, o.StateDir, b.progress)
			if err != nil {
				return nil, err
			}
			defer k.stop()
			b.keepers = append(b.keepers, k)
		}
	}
	var ready []Runtime
	for _, rt := range found {
		fmt.Fprintf(b.progress, "warm-up %s...\n", rt.Name)
		err := b.warmUp(ctx, rt)
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		var re *RunError
		if rt.Optional && errors.As(err, &re) {
			rep.Unavailable = append(rep.Unavailable, Unavailable{rt.Name, re.Reason()})
			continue
		}
		if err != nil {
			return nil, err
		}
		ready = append(ready, rt)
	}
	if len(ready) == 0 {
		return nil, errors.New("no runtime to measure")
	}
	slices.SortStableFunc(rep.Unavailable, func(a, b Unavailable) int {
		return slices.Index(o.Runtimes, a.Runtime) - slices.Index(o.Runtimes, b.Runtime)
	})

	// samples[measure][runtime] are the timed numbers; phases[runtime],
	// hull's breakdown of its runs of /bin/true.
	phases := make([][][]phase, len(ready))
	samples := make([][][]time.Duration, len(measures))
	for m := range measures {
		samples[m] = make([][]time.Duration, len(ready))
	}
	for i := 1; i <= o.Runs; i++ {
		fmt.Fprintf(b.progress, "run %d/%d...\n", i, o.Runs)
		for r, rt := range ready {
			for m := range measures {
				s, err := b.measure(ctx, rt, m)
				if err != nil {
					return nil, err
				}
				samples[m][r] = append(samples[m][r], measures[m].pick(s))
				if rt.Hull && measures[m].name == "true" {
					phases[r] = append(phases[r], s.withOther())
				}
			}
		}
	}

	for m, ms := range measures {
		res := make([]Result, len(ready))
		for r, rt := range ready {
			res[r] = Result{Runtime: rt.Name, Stats: Summarize(samples[m][r]), Samples: samples[m][r]}
		}
		rep.Measures = append(rep.Measures, Measure{Name: ms.name, Title: ms.title, About: ms.about, Results: withRatios(res)})
	}
	for r, rt := range ready {
		if len(phases[r]) > 0 {
			rep.Phases = append(rep.Phases, summarizePhases(rt.Name, phases[r]))
		}
	}
	return rep, nil
}

// bencher runs the containers of one benchmark.
type bencher struct {
	opts     *Options
	timeout  time.Duration
	progress io.Writer
	seq      int
	keepers  []*keeper
}

// warmUp runs each measure's bundle once, untimed.
func (b *bencher) warmUp(ctx context.Context, rt Runtime) error {
	for m := range measures {
		if _, err := b.measure(ctx, rt, m); err != nil {
			return err
		}
	}
	return nil
}

// measure runs the bundle of measures[m] once under rt. It first waits,
// untimed, for every pool to be full again: a pooled runtime claims a
// ready VM, and no runtime is timed beside a pool's refill boot.
func (b *bencher) measure(ctx context.Context, rt Runtime, m int) (sample, error) {
	ms := measures[m]
	b.seq++
	id := fmt.Sprintf("bench-%d-%d", os.Getpid(), b.seq)
	for _, k := range b.keepers {
		if err := k.waitReady(ctx); err != nil {
			return sample{}, err
		}
	}
	s, err := b.launch(ctx, rt, ms.bundle(b.opts), id)
	if err != nil {
		return sample{}, err
	}
	if s.stdout != ms.stdout {
		return sample{}, &RunError{Runtime: rt.Name, ID: id, Err: fmt.Errorf("container printed %q, want %q", s.stdout, ms.stdout)}
	}
	return s, nil
}

// launch runs container id of bundle under rt, stdin from /dev/null, and
// times it from the launch of the runtime.
func (b *bencher) launch(ctx context.Context, rt Runtime, bundle, id string) (sample, error) {
	if err := ctx.Err(); err != nil {
		return sample{}, err
	}
	runCtx, cancel := context.WithTimeout(ctx, b.timeout)
	defer cancel()
	cmd := exec.CommandContext(runCtx, rt.Argv[0], slices.Concat(rt.Argv[1:], []string{"run", "--bundle", bundle, id})...)
	// Its own process group: a Ctrl-C reaches bench only, which then stops
	// the runtime with SIGTERM, the signal runtimes tear down on; SIGKILL
	// only if that does not end it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 30 * time.Second
	out := &stampWriter{}
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = out, &stderr
	var phaseLog string
	if rt.Hull {
		phaseLog = filepath.Join(b.opts.StateDir, id+".phases")
		defer os.Remove(phaseLog)
		cmd.Env = append(os.Environ(), phaseLogEnv+"="+phaseLog)
	}

	out.start = time.Now()
	err := cmd.Run()
	total := time.Since(out.start)
	if err == nil {
		s := sample{first: out.first, total: total, stdout: out.buf.String()}
		if phaseLog != "" {
			if s.phases, err = readPhases(phaseLog); err != nil {
				return sample{}, &RunError{Runtime: rt.Name, ID: id, Err: err}
			}
		}
		return s, nil
	}
	if ctx.Err() != nil {
		err = ctx.Err()
	} else if runCtx.Err() != nil {
		err = fmt.Errorf("timed out after %v: %w", b.timeout, runCtx.Err())
	}
	if rt.Deletes {
		rt.delete(id)
	}
	if ctx.Err() != nil {
		return sample{}, err
	}
	return sample{}, &RunError{Runtime: rt.Name, ID: id, Err: err, Stderr: stderr.String()}
}

// delete removes what a failed run may have left of container id.
func (rt Runtime) delete(id string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_ = exec.CommandContext(ctx, rt.Argv[0], slices.Concat(rt.Argv[1:], []string{"delete", "--force", id})...).Run()
}

// stampWriter keeps a container's stdout and when its first byte came.
// exec's copying goroutine writes as soon as the pipe has data.
type stampWriter struct {
	start time.Time
	first time.Duration
	buf   bytes.Buffer
}

func (w *stampWriter) Write(p []byte) (int, error) {
	if w.buf.Len() == 0 && len(p) > 0 {
		w.first = time.Since(w.start)
	}
	return w.buf.Write(p)
}

// RunError is a run of a runtime that failed.
type RunError struct {
	Runtime string
	ID      string
	Err     error
	Stderr  string
}

func (e *RunError) Error() string {
	msg := fmt.Sprintf("%s run of container %s: %v", e.Runtime, e.ID, e.Err)
	if s := strings.TrimSpace(e.Stderr); s != "" {
		msg += "; stderr:\n" + s
	}
	return msg
}

func (e *RunError) Unwrap() error { return e.Err }

// Reason says in one line why the run failed: the runtime's first line
// of stderr, else the error.
func (e *RunError) Reason() string {
	if s := strings.TrimSpace(e.Stderr); s != "" {
		line, _, _ := strings.Cut(s, "\n")
		return line
	}
	return e.Err.Error()
}

// findAll finds the runtimes called names, each with a state root of its
// own under stateDir (made here), and lists those not installed.
func findAll(names []string, stateDir string, hull []string) ([]Runtime, []Unavailable, error) {
	var found []Runtime
	var missing []Unavailable
	for _, name := range names {
		root := filepath.Join(stateDir, name)
		rt, err := Find(name, root, hull)
		switch {
		case errors.Is(err, ErrNotInstalled):
			missing = append(missing, Unavailable{name, ErrNotInstalled.Error()})
			continue
		case errors.Is(err, ErrRunscDynamic):
			missing = append(missing, Unavailable{name, err.Error()})
			continue
		}
		if err != nil {
			return nil, nil, err
		}
		if err := os.MkdirAll(root, 0o700); err != nil {
			return nil, nil, fmt.Errorf("creating state root: %w", err)
		}
		found = append(found, rt)
	}
	return found, missing, nil
}
