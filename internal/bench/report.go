package bench

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"runtime"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/hullrt/hull/internal/hypervisor"
)

// Report is the outcome of a benchmark. Its JSON form is what
// `hull bench start --json` prints; durations are in nanoseconds.
type Report struct {
	Machine     Machine       `json:"machine"`
	Version     string        `json:"hull_version"`
	Date        time.Time     `json:"date"`
	Runs        int           `json:"runs"`
	Measures    []Measure     `json:"measures"`
	Unavailable []Unavailable `json:"unavailable,omitempty"`
	// Phases break hull's runs of /bin/true down, per hull runtime.
	Phases []Phases `json:"phases,omitempty"`
}

// Machine is the host the numbers were taken on.
type Machine struct {
	CPUs     int    `json:"cpus"`
	CPUModel string `json:"cpu_model"`
	// Accel is KVM where /dev/kvm opens, else TCG: what hull's guests
	// run on, which decides most of its numbers.
	Accel string `json:"accel"`
}

// Measure is one thing measured, under each runtime.
type Measure struct {
	Name    string   `json:"name"`
	Title   string   `json:"title"`
	About   string   `json:"about"`
	Results []Result `json:"results"`
}

// Result is one measure under one runtime.
type Result struct {
	Runtime string `json:"runtime"`
	Stats
	// Ratio is Median over the Baseline runtime's median; nil without
	// a baseline.
	Ratio   *float64        `json:"ratio_to_runc,omitempty"`
	Samples []time.Duration `json:"samples_ns"`
}

// Unavailable is a runtime that was asked for but could not be measured.
type Unavailable struct {
	Runtime string `json:"runtime"`
	Reason  string `json:"reason"`
}

// Stats summarises samples.
type Stats struct {
	Median time.Duration `json:"median_ns"`
	Min    time.Duration `json:"min_ns"`
	Max    time.Duration `json:"max_ns"`
	Runs   int           `json:"runs"`
}

// Summarize returns the median, minimum and maximum of samples; the
// median of an even number of samples is the mean of the middle two.
func Summarize(samples []time.Duration) Stats {
	if len(samples) == 0 {
		return Stats{}
	}
	s := slices.Clone(samples)
	slices.Sort(s)
	n := len(s)
	med := s[n/2]
	if n%2 == 0 {
		med = (s[n/2-1] + s[n/2]) / 2
	}
	return Stats{Median: med, Min: s[0], Max: s[n-1], Runs: n}
}

// summarizeFloats is Summarize for throughputs; samples must not be
// empty.
func summarizeFloats(samples []float64) Rates {
	s := slices.Clone(samples)
	slices.Sort(s)
	n := len(s)
	med := s[n/2]
	if n%2 == 0 {
		med = (s[n/2-1] + s[n/2]) / 2
	}
	return Rates{Median: med, Min: s[0], Max: s[n-1], Samples: samples}
}

// Ratio returns d/base, or 0 without a base.
func Ratio(d, base time.Duration) float64 {
	if base <= 0 {
		return 0
	}
	return float64(d) / float64(base)
}

// withRatios sets each result's ratio to the Baseline's median, if the
// Baseline is among them.
func withRatios(res []Result) []Result {
	i := slices.IndexFunc(res, func(r Result) bool { return r.Runtime == Baseline })
	if i < 0 || res[i].Median <= 0 {
		return res
	}
	for j := range res {
		r := Ratio(res[j].Median, res[i].Median)
		res[j].Ratio = &r
	}
	return res
}

// DetectMachine describes this host.
func DetectMachine() Machine {
	m := Machine{CPUs: runtime.NumCPU(), CPUModel: "unknown", Accel: "TCG"}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		if model := cpuModel(string(b)); model != "" {
			m.CPUModel = model
		}
	}
	if hypervisor.KVMUsable() {
		m.Accel = "KVM"
	}
	return m
}

// cpuModel returns the first "model name" of /proc/cpuinfo's text.
func cpuModel(cpuinfo string) string {
	for _, line := range strings.Split(cpuinfo, "\n") {
		k, v, ok := strings.Cut(line, ":")
		if ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// WriteText writes the report as a header line and a table per measure.
func (r *Report) WriteText(w io.Writer) error {
	var b bytes.Buffer
	writeHeader(&b, r.Machine, r.Version, r.Date, r.Unavailable)
	for _, m := range r.Measures {
		fmt.Fprintf(&b, "\n%s: %s\n", m.Title, m.About)
		tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "RUNTIME\tMEDIAN\tMIN\tMAX\tRUNS\tRATIO")
		for _, res := range m.Results {
			ratio := "-"
			if res.Ratio != nil {
				ratio = fmt.Sprintf("%.1fx %s", *res.Ratio, Baseline)
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\n", res.Runtime,
				FormatDuration(res.Median), FormatDuration(res.Min), FormatDuration(res.Max), res.Runs, ratio)
		}
		tw.Flush()
	}
	for _, p := range r.Phases {
		p.writeText(&b)
	}
	_, err := w.Write(b.Bytes())
	return err
}

// writeHeader writes the lines every report starts with: where, what and
// when it was measured, and which runtimes could not be.
func writeHeader(b *bytes.Buffer, m Machine, version string, date time.Time, unavailable []Unavailable) {
	fmt.Fprintf(b, "machine: %d CPUs, %s, %s; hull %s; %s\n",
		m.CPUs, m.CPUModel, m.Accel, version, date.Format("2006-01-02 15:04:05 MST"))
	for _, u := range unavailable {
		fmt.Fprintf(b, "%s: unavailable: %s\n", u.Runtime, u.Reason)
	}
}

// FormatDuration prints d with three or four significant digits, in
// the unit a reader compares start times in.
func FormatDuration(d time.Duration) string {
	switch {
	case d >= time.Second:
		return fmt.Sprintf("%.3fs", d.Seconds())
	case d >= time.Millisecond:
		return fmt.Sprintf("%.1fms", float64(d)/float64(time.Millisecond))
	default:
		return fmt.Sprintf("%.0fµs", float64(d)/float64(time.Microsecond))
	}
}
