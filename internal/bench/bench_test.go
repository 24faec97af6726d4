package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const ms = time.Millisecond

func TestSummarize(t *testing.T) {
	for _, tc := range []struct {
		name    string
		samples []time.Duration
		want    Stats
	}{
		{"none", nil, Stats{}},
		{"one", []time.Duration{5 * ms}, Stats{5 * ms, 5 * ms, 5 * ms, 1}},
		{"odd, unsorted", []time.Duration{9 * ms, 1 * ms, 4 * ms}, Stats{4 * ms, 1 * ms, 9 * ms, 3}},
		{"even: mean of the middle two", []time.Duration{10 * ms, 2 * ms, 4 * ms, 1 * ms}, Stats{3 * ms, 1 * ms, 10 * ms, 4}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := append([]time.Duration(nil), tc.samples...)
			if got := Summarize(tc.samples); got != tc.want {
				t.Errorf("Summarize(%v) = %+v, want %+v", tc.samples, got, tc.want)
			}
			for i := range in {
				if in[i] != tc.samples[i] {
					t.Fatalf("Summarize reordered its argument: %v", tc.samples)
				}
			}
		})
	}
}

func TestRatio(t *testing.T) {
	for _, tc := range []struct {
		d, base time.Duration
		want    float64
	}{
		{3500 * ms, 70 * ms, 50},
		{35 * ms, 70 * ms, 0.5},
		{70 * ms, 70 * ms, 1},
		{70 * ms, 0, 0},
	} {
		if got := Ratio(tc.d, tc.base); got != tc.want {
			t.Errorf("Ratio(%v, %v) = %v, want %v", tc.d, tc.base, got, tc.want)
		}
	}
}

func TestWithRatios(t *testing.T) {
	res := withRatios([]Result{
		{Runtime: "hull", Stats: Stats{Median: 3647 * ms}},
		{Runtime: "runc", Stats: Stats{Median: 70 * ms}},
	})
	if res[0].Ratio == nil || *res[0].Ratio != 52.1 || *res[1].Ratio != 1 {
		t.Errorf("ratios: %v, %v; want 52.1, 1", res[0].Ratio, res[1].Ratio)
	}
	res = withRatios([]Result{{Runtime: "hull", Stats: Stats{Median: 3 * time.Second}}})
	if res[0].Ratio != nil {
		t.Errorf("ratio without runc: %v, want none", *res[0].Ratio)
	}
}

func TestFormatDuration(t *testing.T) {
	for d, want := range map[time.Duration]string{
		3647 * ms:                    "3.647s",
		time.Second:                  "1.000s",
		70*ms + 450*time.Microsecond: "70.5ms",
		ms:                           "1.0ms",
		250 * time.Microsecond:       "250µs",
	} {
		if got := FormatDuration(d); got != want {
			t.Errorf("FormatDuration(%v) = %q, want %q", d, got, want)
		}
	}
}

func TestCPUModel(t *testing.T) {
	info := "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel\t\t: 1\nmodel name\t: AMD EPYC 7B13\nflags\t\t: fpu\n\nprocessor\t: 1\nmodel name\t: other\n"
	if got := cpuModel(info); got != "AMD EPYC 7B13" {
		t.Errorf("cpuModel = %q, want the first model name", got)
	}
	if got := cpuModel("processor\t: 0\n"); got != "" {
		t.Errorf("cpuModel without a model name = %q, want empty", got)
	}
}

func testReport() *Report {
	one := 1.0
	hull := 52.1
	return &Report{
		Machine: Machine{CPUs: 2, CPUModel: "AMD EPYC", Accel: "TCG"},
		Version: "v1-test",
		Date:    time.Date(2026, 5, 9, 12, 0, 0, 0, time.UTC),
		Runs:    3,
		Measures: []Measure{{
			Name:  "start",
			Title: "process start",
			About: "launch to first byte",
			Results: []Result{
				{Runtime: "hull", Stats: Stats{3647 * ms, 3600 * ms, 3900 * ms, 3}, Ratio: &hull},
				{Runtime: "runc", Stats: Stats{70 * ms, 65 * ms, 81 * ms, 3}, Ratio: &one},
			},
		}, {
			Name:    "true",
			Title:   "total run of /bin/true",
			About:   "launch to exit",
			Results: []Result{{Runtime: "runsc", Stats: Stats{270 * ms, 260 * ms, 300 * ms, 3}}},
		}},
		Unavailable: []Unavailable{{"crun", "not installed"}},
	}
}

func TestWriteText(t *testing.T) {
	var b bytes.Buffer
	if err := testReport().WriteText(&b); err != nil {
		t.Fatal(err)
	}
	want := `machine: 2 CPUs, AMD EPYC, TCG; hull v1-test; 2026-05-09 12:00:00 UTC
crun: unavailable: not installed

process start: launch to first byte
RUNTIME  MEDIAN  MIN     MAX     RUNS  RATIO
hull     3.647s  3.600s  3.900s  3     52.1x runc
runc     70.0ms  65.0ms  81.0ms  3     1.0x runc

total run of /bin/true: launch to exit
RUNTIME  MEDIAN   MIN      MAX      RUNS  RATIO
runsc    270.0ms  260.0ms  300.0ms  3     -
`
	if b.String() != want {
		t.Errorf("WriteText:\n%s\nwant:\n%s", b.String(), want)
	}
}

func TestReportJSON(t *testing.T) {
	b, err := json.Marshal(testReport())
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		Machine  Machine `json:"machine"`
		Measures []struct {
			Results []map[string]any `json:"results"`
		} `json:"measures"`
		Unavailable []Unavailable `json:"unavailable"`
	}
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	hull := got.Measures[0].Results[0]
	if hull["runtime"] != "hull" || hull["median_ns"] != float64(3647*ms) || hull["ratio_to_runc"] != 52.1 || hull["runs"] != 3.0 {
		t.Errorf("hull result in JSON: %v", hull)
	}
	if _, ok := got.Measures[1].Results[0]["ratio_to_runc"]; ok {
		t.Errorf("ratio without runc in JSON: %v", got.Measures[1].Results[0])
	}
	if got.Machine.Accel != "TCG" || len(got.Unavailable) != 1 {
		t.Errorf("JSON: %s", b)
	}
}

func TestFind(t *testing.T) {
	bin := t.TempDir()
	t.Setenv("PATH", bin)
	writeScript(t, filepath.Join(bin, "runsc"), "exit 0")

	if _, err := Find("docker", "/r", nil); err == nil || !strings.Contains(err.Error(), "unknown runtime") {
		t.Errorf("Find(docker): %v, want unknown runtime", err)
	}
	if _, err := Find("runc", "/r", nil); !errors.Is(err, ErrNotInstalled) {
		t.Errorf("Find(runc) with runc not in PATH: %v, want ErrNotInstalled", err)
	}
	rt, err := Find("runsc", "/r", nil)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{filepath.Join(bin, "runsc"), "--root", "/r", "--platform=systrap", "--network=none"}; strings.Join(rt.Argv, " ") != strings.Join(want, " ") || !rt.Optional {
		t.Errorf("Find(runsc) = %+v", rt)
	}
	hull := []string{"/usr/bin/hull", "--config", "c.toml"}
	rt, err = Find("hull", "/r", hull)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(rt.Argv, " "); got != "/usr/bin/hull --config c.toml --root /r" || rt.Optional {
		t.Errorf("Find(hull) = %+v", rt)
	}
	if len(hull) != 3 {
		t.Errorf("Find changed the hull command line it was given: %v", hull)
	}
	rt, err = Find("hull-template", "/r", hull)
	if err != nil {
		t.Fatal(err)
	}
	if !rt.Hull || !rt.Pooled || strings.Join(rt.PoolFlags, " ") != "--template" {
		t.Errorf("Find(hull-template) = %+v", rt)
	}
	// A runsc that needs a dynamic loader cannot start its sandbox.
	if _, err := os.Stat("/bin/true"); err == nil && dynamic("/bin/true") {
		if err := os.Remove(filepath.Join(bin, "runsc")); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink("/bin/true", filepath.Join(bin, "runsc")); err != nil {
			t.Fatal(err)
		}
		if _, err := Find("runsc", "/r", nil); !errors.Is(err, ErrRunscDynamic) || !strings.Contains(err.Error(), "CGO_ENABLED=0") {
			t.Errorf("Find(runsc) of a dynamic binary: %v, want ErrRunscDynamic", err)
		}
	}
}

// fakeRuntime logs its command line to $LOG and behaves like `run` of a
// bench bundle: the start bundle prints startOutput. As `pool` it says it
// has a VM ready and waits to be stopped.
const fakeRuntime = `case " $* " in *" pool "*) echo "pool: vm /x ready in 1ms (1/1)"; exec sleep 1000;; esac
echo "${0##*/} $*" >>"$LOG"
for a; do [ "$prev" = --bundle ] && bundle=$a; prev=$a; done
case "$bundle" in */start) echo started;; esac`

// TestRun drives Run with fake runtimes (real ones need root): the order
// of runs, an optional runtime failing, and the report.
func TestRun(t *testing.T) {
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		t.Skip("no sleep(1) on this host")
	}
	bin, dir := t.TempDir(), t.TempDir()
	log := filepath.Join(dir, "log")
	t.Setenv("PATH", bin)
	t.Setenv("LOG", log)
	writeScript(t, filepath.Join(bin, "hull"), fakeRuntime)
	writeScript(t, filepath.Join(bin, "runc"), fakeRuntime)
	writeScript(t, filepath.Join(bin, "crun"), `echo "cannot set up cgroups: hybrid mode" >&2; echo more >&2; exit 1`)
	// The fake pool stays up, as a real one does, until bench stops it.
	if err := os.Symlink(sleep, filepath.Join(bin, "sleep")); err != nil {
		t.Fatal(err)
	}

	var progress bytes.Buffer
	rep, err := Run(context.Background(), Options{
		Runtimes:    Known,
		Hull:        []string{filepath.Join(bin, "hull"), "--config", "c.toml"},
		StateDir:    filepath.Join(dir, "state"),
		StartBundle: filepath.Join(dir, "start"),
		TrueBundle:  filepath.Join(dir, "true"),
		Runs:        2,
		Version:     "test",
		Progress:    &progress,
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []Unavailable{{"crun", "cannot set up cgroups: hybrid mode"}, {"runsc", "not installed"}}
	if len(rep.Unavailable) != 2 || rep.Unavailable[0] != want[0] || rep.Unavailable[1] != want[1] {
		t.Errorf("unavailable: %v, want %v", rep.Unavailable, want)
	}
	if len(rep.Measures) != 2 || rep.Measures[0].Name != "start" || rep.Measures[1].Name != "true" {
		t.Fatalf("measures: %+v", rep.Measures)
	}
	for _, m := range rep.Measures {
		if len(m.Results) != 3 || m.Results[0].Runtime != "hull" || m.Results[1].Runtime != "hull-pooled" || m.Results[2].Runtime != "runc" {
			t.Fatalf("%s results: %+v", m.Name, m.Results)
		}
		for _, r := range m.Results {
			if r.Runs != 2 || len(r.Samples) != 2 || r.Min <= 0 || r.Ratio == nil {
				t.Errorf("%s under %s: %+v", m.Name, r.Runtime, r)
			}
		}
	}

	b, err := os.ReadFile(log)
	if err != nil {
		t.Fatal(err)
	}
	var runs []string
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		f := strings.Fields(line)
		runs = append(runs, f[0]+" "+filepath.Base(f[len(f)-2]))
	}
	// Warm-up of each, then rounds that interleave the runtimes.
	wantRuns := "hull start,hull true,hull start,hull true,runc start,runc true," +
		"hull start,hull true,hull start,hull true,runc start,runc true," +
		"hull start,hull true,hull start,hull true,runc start,runc true"
	if got := strings.Join(runs, ","); got != wantRuns {
		t.Errorf("runs:\n%s\nwant:\n%s", got, wantRuns)
	}
	first := strings.Fields(strings.SplitN(string(b), "\n", 2)[0])
	if got := strings.Join(first[1:6], " "); got != "--config c.toml --root "+filepath.Join(dir, "state", "hull")+" run" {
		t.Errorf("hull command line: %v", first)
	}
	// hull's runs are broken down by phase; the fake records none, so
	// all of a run is "other".
	if len(rep.Phases) != 2 || rep.Phases[1].Runtime != "hull-pooled" || len(rep.Phases[0].Phases) != 1 || rep.Phases[0].Phases[0].Name != otherPhase {
		t.Errorf("phases: %+v", rep.Phases)
	}
	if !strings.Contains(progress.String(), "hull-pooled: pool started") {
		t.Errorf("no pool for hull-pooled: %q", progress.String())
	}
	if !strings.Contains(progress.String(), "run 2/2...") {
		t.Errorf("progress: %q", progress.String())
	}
}

func TestRunFailure(t *testing.T) {
	bin, dir := t.TempDir(), t.TempDir()
	t.Setenv("PATH", bin)
	writeScript(t, filepath.Join(bin, "runc"), `echo "runc: no such bundle" >&2; exit 3`)
	_, err := Run(context.Background(), Options{
		Runtimes: []string{"runc"}, StateDir: dir, StartBundle: dir, TrueBundle: dir, Runs: 1,
	})
	var re *RunError
	if !errors.As(err, &re) || re.Runtime != "runc" || !strings.Contains(err.Error(), "runc: no such bundle") || !strings.Contains(err.Error(), "exit status 3") {
		t.Errorf("Run with a failing runc: %v, want its stderr and status", err)
	}
}

func TestRunCancel(t *testing.T) {
	bin, dir := t.TempDir(), t.TempDir()
	t.Setenv("PATH", bin)
	writeScript(t, filepath.Join(bin, "runc"), `[ "$3" = run ] || exit 0; trap 'kill $!; exit 143' TERM; /bin/sleep 30 & wait`)
	ctx, cancel := context.WithTimeout(context.Background(), 200*ms)
	defer cancel()
	start := time.Now()
	_, err := Run(ctx, Options{Runtimes: []string{"runc"}, StateDir: dir, StartBundle: dir, TrueBundle: dir, Runs: 1})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Run cancelled: %v, want the context's error", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("Run took %v to stop after cancel", d)
	}
}

func writeScript(t *testing.T, path, body string) {
	t.Helper()
	if err := os.WriteFile(path, []byte("#!/bin/sh\n"+body+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
}

func TestReadPhases(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "phases")
	if err := os.WriteFile(p, []byte(`{"phase":"vmm","ns":60000000}
{"phase":"agent-ready","ns":2000000000}
`), 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := readPhases(p)
	if err != nil || len(got) != 2 || got[1] != (phase{"agent-ready", 2 * time.Second}) {
		t.Fatalf("readPhases: %v, %v", got, err)
	}
	s := sample{total: 2500 * ms, phases: got}
	if o := s.withOther(); len(o) != 3 || o[2] != (phase{otherPhase, 440 * ms}) {
		t.Errorf("withOther: %v", o)
	}
	if none, err := readPhases(filepath.Join(dir, "missing")); none != nil || err != nil {
		t.Errorf("no phase log: %v, %v", none, err)
	}
	if err := os.WriteFile(p, []byte("garbage\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := readPhases(p); err == nil {
		t.Error("a garbled phase log was read")
	}
	sum := summarizePhases("hull", [][]phase{
		{{"vmm", 10 * ms}, {"agent-ready", 100 * ms}},
		{{"vmm", 30 * ms}, {"agent-ready", 300 * ms}, {"grow", 5 * ms}},
	})
	if len(sum.Phases) != 3 || sum.Phases[0] != (PhaseMedian{"vmm", 20 * ms}) || sum.Phases[2] != (PhaseMedian{"grow", 2500 * time.Microsecond}) || sum.Total != 222500*time.Microsecond {
		t.Errorf("summarizePhases: %+v", sum)
	}
	// agent-ready is the guest's; vmm and grow are the host's.
	if sum.Guest != 200*ms || sum.Host != 22500*time.Microsecond {
		t.Errorf("summarizePhases: guest %v, host %v, want 200ms and 22.5ms", sum.Guest, sum.Host)
	}
	var b bytes.Buffer
	sum.writeText(&b)
	for _, want := range []string{"vmm          host   20.0ms", "agent-ready  guest  200.0ms", "in the guest: 200.0ms; on the host (the runtime's own overhead): 22.5ms"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("breakdown lacks %q:\n%s", want, b.String())
		}
	}
}
