package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// IdleProcess is what the containers of `bench memory` and `bench density`
// run: nothing, for as long as they are let.
var IdleProcess = []string{"sleep", "100000"}

// MemOptions says what `hull bench memory` and `hull bench density`
// measure.
type MemOptions struct {
	Runtimes []string // names from Known
	Hull     []string // hull binary and global flags
	StateDir string   // one state root per runtime; the caller removes it
	Bundle   string   // runs IdleProcess
	// Runs is how many times memory starts one idle pod; Pods, how many
	// density starts at once.
	Runs, Pods int
	// Settle is how long a pod idles before it is measured.
	Settle   time.Duration
	Version  string
	Progress io.Writer
}

// PodMemory is the memory of one idle pod: the proportional set size of
// every host process that belongs to it (for hull: monitor or shim, VMM,
// virtiofsd), and the VMM's resident set on its own.
type PodMemory struct {
	PSS       int64 `json:"pss_bytes"`
	VMMRSS    int64 `json:"vmm_rss_bytes,omitempty"`
	Processes int   `json:"processes"`
}

// MemResult is one runtime's idle pods.
type MemResult struct {
	Runtime string      `json:"runtime"`
	Pods    []PodMemory `json:"pods"`
	// Medians over Pods.
	PSS    int64    `json:"median_pss_bytes"`
	VMMRSS int64    `json:"median_vmm_rss_bytes,omitempty"`
	Ratio  *float64 `json:"ratio_to_runc,omitempty"`
	// Density only: how many of the pods started, how long starting all
	// took, and whether all were removed without leftovers.
	Started  int           `json:"started,omitempty"`
	StartAll time.Duration `json:"start_all_ns,omitempty"`
	Clean    *bool         `json:"clean,omitempty"`
}

// MemReport is what `hull bench memory` or `density` prints.
type MemReport struct {
	Machine     Machine       `json:"machine"`
	Version     string        `json:"hull_version"`
	Date        time.Time     `json:"date"`
	Kind        string        `json:"kind"` // "memory" or "density"
	Pods        int           `json:"pods,omitempty"`
	Results     []MemResult   `json:"results"`
	Unavailable []Unavailable `json:"unavailable,omitempty"`
}

// memRuntimes finds the runtimes asked for, starting a pool for a pooled
// one; stop stops the pools.
func memRuntimes(ctx context.Context, o *MemOptions, rep *MemReport) (rts []Runtime, keepers map[string]*keeper, stop func(), err error) {
	keepers = map[string]*keeper{}
	stop = func() {
		for _, k := range keepers {
			k.stop()
		}
	}
	found, missing, err := findAll(o.Runtimes, o.StateDir, o.Hull)
	if err != nil {
		return nil, nil, nil, err
	}
	rep.Unavailable = append(rep.Unavailable, missing...)
	for _, rt := range found {
		if rt.Pooled {
			k, err := startKeeper(ctx, rt, o.StateDir, o.Progress)
			if err != nil {
				stop()
				return nil, nil, nil, err
			}
			keepers[rt.Name] = k
		}
		rts = append(rts, rt)
	}
	return rts, keepers, stop, nil
}

// RunMemory starts one idle pod at a time under each runtime, o.Runs
// times, and measures what it costs the host.
func RunMemory(ctx context.Context, o MemOptions) (*MemReport, error) {
	rep := &MemReport{Machine: DetectMachine(), Version: o.Version, Date: time.Now(), Kind: "memory"}
	rts, keepers, stop, err := memRuntimes(ctx, &o, rep)
	if err != nil {
		return nil, err
	}
	defer stop()
	for _, rt := range rts {
		res := MemResult{Runtime: rt.Name}
		for i := 0; i < o.Runs; i++ {
			fmt.Fprintf(o.Progress, "%s: idle pod %d/%d...\n", rt.Name, i+1, o.Runs)
			if k := keepers[rt.Name]; k != nil {
				if err := k.waitReady(ctx); err != nil {
					return nil, err
				}
			}
			id := fmt.Sprintf("bench-mem-%d-%d", os.Getpid(), i)
			if err := startIdle(ctx, rt, o.Bundle, id); err != nil {
				if rt.Optional && i == 0 {
					rep.Unavailable = append(rep.Unavailable, Unavailable{rt.Name, reason(err)})
					res.Runtime = ""
					break
				}
				return nil, err
			}
			sleepCtx(ctx, o.Settle)
			m, err := podMemory(rt, id)
			rt.delete(id)
			if err != nil {
				return nil, err
			}
			res.Pods = append(res.Pods, m)
		}
		if res.Runtime != "" {
			rep.Results = append(rep.Results, res.summarize())
		}
	}
	rep.Results = withMemRatios(rep.Results)
	return rep, ctx.Err()
}

// RunDensity starts o.Pods idle pods under each runtime, all running at
// once, measures them together, and removes them.
func RunDensity(ctx context.Context, o MemOptions) (*MemReport, error) {
	rep := &MemReport{Machine: DetectMachine(), Version: o.Version, Date: time.Now(), Kind: "density", Pods: o.Pods}
	rts, _, stop, err := memRuntimes(ctx, &o, rep)
	if err != nil {
		return nil, err
	}
	defer stop()
	for _, rt := range rts {
		res := MemResult{Runtime: rt.Name}
		var ids []string
		start := time.Now()
		for i := 0; i < o.Pods && ctx.Err() == nil; i++ {
			id := fmt.Sprintf("bench-density-%d-%d", os.Getpid(), i)
			fmt.Fprintf(o.Progress, "%s: pod %d/%d...\n", rt.Name, i+1, o.Pods)
			if err := startIdle(ctx, rt, o.Bundle, id); err != nil {
				fmt.Fprintf(o.Progress, "%s: pod %d: %s\n", rt.Name, i+1, reason(err))
				rt.delete(id)
				continue
			}
			ids = append(ids, id)
		}
		res.StartAll, res.Started = time.Since(start), len(ids)
		if len(ids) == 0 && rt.Optional {
			rep.Unavailable = append(rep.Unavailable, Unavailable{rt.Name, "no pod started"})
			continue
		}
		sleepCtx(ctx, o.Settle)
		for _, id := range ids {
			if m, err := podMemory(rt, id); err == nil {
				res.Pods = append(res.Pods, m)
			}
		}
		fmt.Fprintf(o.Progress, "%s: removing %d pods...\n", rt.Name, len(ids))
		for _, id := range ids {
			rt.delete(id)
		}
		clean := leftovers(rt) == ""
		if !clean {
			fmt.Fprintf(o.Progress, "%s: left behind: %s\n", rt.Name, leftovers(rt))
		}
		res.Clean = &clean
		rep.Results = append(rep.Results, res.summarize())
	}
	rep.Results = withMemRatios(rep.Results)
	return rep, ctx.Err()
}

func (r MemResult) summarize() MemResult {
	var pss, rss []time.Duration // Summarize works on durations; bytes fit
	for _, p := range r.Pods {
		pss = append(pss, time.Duration(p.PSS))
		rss = append(rss, time.Duration(p.VMMRSS))
	}
	if len(pss) > 0 {
		r.PSS = int64(Summarize(pss).Median)
		r.VMMRSS = int64(Summarize(rss).Median)
	}
	return r
}

func withMemRatios(res []MemResult) []MemResult {
	for _, base := range res {
		if base.Runtime != Baseline || base.PSS == 0 {
			continue
		}
		for i := range res {
			ratio := float64(res[i].PSS) / float64(base.PSS)
			res[i].Ratio = &ratio
		}
	}
	return res
}

// startIdle creates and starts container id of bundle under rt, its
// stdio on /dev/null, as a detached container of podman's or docker's is.
func startIdle(ctx context.Context, rt Runtime, bundle, id string) error {
	for _, verb := range [][]string{{"create", "--bundle", bundle, id}, {"start", id}} {
		cctx, cancel := context.WithTimeout(ctx, DefaultTimeout)
		cmd := exec.CommandContext(cctx, rt.Argv[0], slices.Concat(rt.Argv[1:], verb)...)
		// A file, not a pipe: the detached container keeps what it inherits.
		stderr, err := os.CreateTemp("", "hull-bench-stderr-")
		if err != nil {
			cancel()
			return err
		}
		os.Remove(stderr.Name())
		cmd.Stderr = stderr
		err = cmd.Run()
		cancel()
		if err != nil {
			msg, _ := os.ReadFile("/proc/self/fd/" + strconv.Itoa(int(stderr.Fd())))
			stderr.Close()
			rt.delete(id)
			return &RunError{Runtime: rt.Name, ID: id, Err: fmt.Errorf("%s: %w", verb[0], err), Stderr: string(msg)}
		}
		stderr.Close()
	}
	return nil
}

// podMemory adds up the processes of container id: its state's pid and
// that process's descendants, and every process whose command line names
// the runtime's state root (a VMM, virtiofsd, runsc's sandbox and gofer).
func podMemory(rt Runtime, id string) (PodMemory, error) {
	out, err := exec.Command(rt.Argv[0], slices.Concat(rt.Argv[1:], []string{"state", id})...).Output()
	if err != nil {
		return PodMemory{}, fmt.Errorf("%s state %s: %w", rt.Name, id, err)
	}
	var st struct{ Pid int }
	if err := json.Unmarshal(out, &st); err != nil || st.Pid <= 0 {
		return PodMemory{}, fmt.Errorf("%s state %s: no pid in %q", rt.Name, id, out)
	}
	pids := map[int]bool{}
	children := map[int][]int{}
	procs, _ := filepath.Glob("/proc/[0-9]*")
	root := rootOf(rt)
	// A hull VM claimed from a pool names the directory it was booted in.
	var origin []byte
	if b, err := os.ReadFile(filepath.Join(root, id, "vm", "origin")); err == nil {
		origin = append(bytes.TrimSpace(b), '/')
	}
	for _, p := range procs {
		pid, _ := strconv.Atoi(filepath.Base(p))
		if stat, err := os.ReadFile(p + "/stat"); err == nil {
			if i := bytes.LastIndexByte(stat, ')'); i > 0 {
				if f := strings.Fields(string(stat[i+1:])); len(f) > 1 {
					ppid, _ := strconv.Atoi(f[1])
					children[ppid] = append(children[ppid], pid)
				}
			}
		}
		cmdline, err := os.ReadFile(p + "/cmdline")
		if err != nil {
			continue
		}
		if (root != "" && bytes.Contains(cmdline, []byte(root)) && bytes.Contains(cmdline, []byte(id))) || (origin != nil && bytes.Contains(cmdline, origin)) {
			pids[pid] = true
		}
	}
	var walk func(int)
	walk = func(pid int) {
		pids[pid] = true
		for _, c := range children[pid] {
			walk(c)
		}
	}
	walk(st.Pid)
	var m PodMemory
	for pid := range pids {
		pss, rss, err := rollup(pid)
		if err != nil {
			continue // gone meanwhile
		}
		m.PSS += pss
		m.Processes++
		if comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid)); strings.HasPrefix(string(comm), "qemu-system") {
			m.VMMRSS += rss
		}
	}
	return m, nil
}

// rollup reads a process's Pss and Rss, in bytes, from smaps_rollup.
func rollup(pid int) (pss, rss int64, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
	if err != nil {
		return 0, 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		kb, _ := strconv.ParseInt(f[1], 10, 64)
		switch f[0] {
		case "Pss:":
			pss = kb << 10
		case "Rss:":
			rss = kb << 10
		}
	}
	return pss, rss, nil
}

// rootOf is the --root a runtime was given.
func rootOf(rt Runtime) string {
	for i, a := range rt.Argv {
		if a == "--root" && i+1 < len(rt.Argv) {
			return rt.Argv[i+1]
		}
	}
	return ""
}

// leftovers names what remains of a runtime's containers: processes that
// name its state root, and entries in it.
func leftovers(rt Runtime) string {
	root := rootOf(rt)
	var left []string
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		if b, err := os.ReadFile(p); err == nil && bytes.Contains(b, []byte(root+"/")) && !bytes.Contains(b, []byte(" pool")) && !bytes.Contains(b, []byte("\x00pool\x00")) {
			left = append(left, "process "+filepath.Base(filepath.Dir(p)))
		}
	}
	entries, _ := os.ReadDir(root)
	for _, e := range entries {
		if e.Name() != "pool" && e.Name() != "pool.sock" {
			left = append(left, e.Name())
		}
	}
	return strings.Join(left, ", ")
}

func reason(err error) string {
	var re *RunError
	if errors.As(err, &re) {
		return re.Reason()
	}
	return err.Error()
}

func sleepCtx(ctx context.Context, d time.Duration) {
	select {
	case <-time.After(d):
	case <-ctx.Done():
	}
}

// WriteText writes the report as a table.
func (r *MemReport) WriteText(w io.Writer) error {
	var b bytes.Buffer
	writeHeader(&b, r.Machine, r.Version, r.Date, r.Unavailable)
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	if r.Kind == "density" {
		fmt.Fprintf(&b, "\n%d idle pods (%s) at once: PSS of every host process of each pod, medians\n", r.Pods, strings.Join(IdleProcess, " "))
		fmt.Fprintln(tw, "RUNTIME\tSTARTED\tSTART ALL\tPSS/POD\tPSS ALL\tVMM RSS/POD\tCLEAN\tRATIO")
		for _, res := range r.Results {
			var all int64
			for _, p := range res.Pods {
				all += p.PSS
			}
			fmt.Fprintf(tw, "%s\t%d/%d\t%s\t%s\t%s\t%s\t%v\t%s\n", res.Runtime, res.Started, r.Pods, FormatDuration(res.StartAll),
				FormatBytes(res.PSS), FormatBytes(all), FormatBytes(res.VMMRSS), res.Clean != nil && *res.Clean, memRatio(res))
		}
	} else {
		fmt.Fprintf(&b, "\none idle pod (%s): PSS of every host process of the pod (hull: monitor, VMM, virtiofsd), and the VMM's RSS\n", strings.Join(IdleProcess, " "))
		fmt.Fprintln(tw, "RUNTIME\tPSS\tMIN\tMAX\tVMM RSS\tPROCESSES\tRUNS\tRATIO")
		for _, res := range r.Results {
			lo, hi := int64(0), int64(0)
			for i, p := range res.Pods {
				if i == 0 || p.PSS < lo {
					lo = p.PSS
				}
				hi = max(hi, p.PSS)
			}
			procs := 0
			if len(res.Pods) > 0 {
				procs = res.Pods[0].Processes
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%d\t%s\n", res.Runtime, FormatBytes(res.PSS), FormatBytes(lo), FormatBytes(hi),
				FormatBytes(res.VMMRSS), procs, len(res.Pods), memRatio(res))
		}
	}
	tw.Flush()
	_, err := w.Write(b.Bytes())
	return err
}

func memRatio(r MemResult) string {
	if r.Ratio == nil {
		return "-"
	}
	return fmt.Sprintf("%.1fx %s", *r.Ratio, Baseline)
}

// FormatBytes prints n in MiB (or KiB below one MiB).
func FormatBytes(n int64) string {
	if n == 0 {
		return "-"
	}
	if n < 1<<20 {
		return fmt.Sprintf("%.0f KiB", float64(n)/1024)
	}
	return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
}
