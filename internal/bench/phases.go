package bench

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"text/tabwriter"
	"time"
)

// phaseLogEnv is monitor.PhaseLogEnv: the file a hull run records its
// phases in.
const phaseLogEnv = "HULL_PHASE_LOG"

// otherPhase is what a run took beyond the phases hull times: the CLI's
// own start and exit, spawning a monitor, the agent calls between phases.
const otherPhase = "other"

// guestPhases are the phases whose time goes by in the guest: its kernel
// booting and agent starting, the container's creation there (runc init)
// and its process. Every other phase is the runtime's own overhead on the
// host.
var guestPhases = map[string]bool{
	"agent-ready":      true,
	"create-container": true,
	"start-process":    true,
	"process":          true,
}

type phase struct {
	Name string
	D    time.Duration
}

// readPhases reads the JSON lines a hull run wrote to path; none if it
// wrote none (a hull that does not record them).
func readPhases(path string) ([]phase, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading hull's phases: %w", err)
	}
	var out []phase
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		var l struct {
			Phase string `json:"phase"`
			NS    int64  `json:"ns"`
		}
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil || l.Phase == "" {
			return nil, fmt.Errorf("hull's phase log: bad line %q", sc.Text())
		}
		out = append(out, phase{l.Phase, time.Duration(l.NS)})
	}
	return out, nil
}

// withOther is the sample's phases plus the rest of its total.
func (s sample) withOther() []phase {
	var sum time.Duration
	for _, p := range s.phases {
		sum += p.D
	}
	return append(slices.Clone(s.phases), phase{otherPhase, max(s.total-sum, 0)})
}

// Phases is the median of each phase of one runtime's runs, in the order
// the phases happen.
type Phases struct {
	Runtime string        `json:"runtime"`
	Phases  []PhaseMedian `json:"phases"`
	// Total is the median run, which the phases' medians need not add up to.
	Total time.Duration `json:"total_ns"`
	// Guest and Host are the medians of a run's guest phases and of the
	// others: the runtime's own overhead.
	Guest time.Duration `json:"guest_ns"`
	Host  time.Duration `json:"host_ns"`
}

// PhaseMedian is one phase's median over the runs.
type PhaseMedian struct {
	Name   string        `json:"name"`
	Median time.Duration `json:"median_ns"`
}

// summarizePhases takes the median of each phase over runs; a phase
// missing from a run counts as 0 there.
func summarizePhases(runtime string, runs [][]phase) Phases {
	var order []string
	byName := map[string][]time.Duration{}
	var totals, guests, hosts []time.Duration
	for _, run := range runs {
		var total, guest time.Duration
		for _, p := range run {
			if _, seen := byName[p.Name]; !seen {
				order = append(order, p.Name)
			}
			byName[p.Name] = append(byName[p.Name], p.D)
			total += p.D
			if guestPhases[p.Name] {
				guest += p.D
			}
		}
		totals = append(totals, total)
		guests = append(guests, guest)
		hosts = append(hosts, total-guest)
	}
	out := Phases{Runtime: runtime, Total: Summarize(totals).Median, Guest: Summarize(guests).Median, Host: Summarize(hosts).Median}
	for _, name := range order {
		ds := byName[name]
		for len(ds) < len(runs) {
			ds = append(ds, 0)
		}
		out.Phases = append(out.Phases, PhaseMedian{name, Summarize(ds).Median})
	}
	return out
}

// writeText writes the breakdown as a table with each phase's share.
func (p Phases) writeText(b *bytes.Buffer) {
	fmt.Fprintf(b, "\n%s run of /bin/true, phase by phase (medians; %s is the CLI's start and exit and the calls between phases):\n", p.Runtime, otherPhase)
	tw := tabwriter.NewWriter(b, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "PHASE\tWHERE\tMEDIAN\tSHARE")
	for _, ph := range p.Phases {
		if ph.Median < 50*time.Microsecond {
			continue // steps with nothing to do in this run
		}
		share := 0.0
		if p.Total > 0 {
			share = 100 * float64(ph.Median) / float64(p.Total)
		}
		where := "host"
		if guestPhases[ph.Name] {
			where = "guest"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%.0f%%\n", ph.Name, where, FormatDuration(ph.Median), share)
	}
	tw.Flush()
	fmt.Fprintf(b, "in the guest: %s; on the host (the runtime's own overhead): %s\n", FormatDuration(p.Guest), FormatDuration(p.Host))
}
