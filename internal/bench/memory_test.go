package bench

import (
	"bytes"
	"os"
	"strings"
	"testing"
)

func TestRollupOfThisProcess(t *testing.T) {
	pss, rss, err := rollup(os.Getpid())
	if err != nil {
		t.Skipf("no /proc/PID/smaps_rollup on this kernel: %v", err)
	}
	if pss <= 0 || rss < pss {
		t.Errorf("pss %d rss %d", pss, rss)
	}
}

func TestMemSummaryAndReport(t *testing.T) {
	res := []MemResult{
		{Runtime: "hull", Pods: []PodMemory{{PSS: 300 << 20, VMMRSS: 280 << 20, Processes: 3}, {PSS: 200 << 20, VMMRSS: 180 << 20, Processes: 3}, {PSS: 250 << 20, VMMRSS: 230 << 20, Processes: 3}}},
		{Runtime: "runc", Pods: []PodMemory{{PSS: 2 << 20, Processes: 1}}},
	}
	for i := range res {
		res[i] = res[i].summarize()
	}
	res = withMemRatios(res)
	if res[0].PSS != 250<<20 || res[0].VMMRSS != 230<<20 || res[0].Ratio == nil || *res[0].Ratio != 125 || *res[1].Ratio != 1 {
		t.Fatalf("summaries: %+v %+v", res[0], res[1])
	}
	var b bytes.Buffer
	rep := &MemReport{Kind: "memory", Results: res, Machine: Machine{CPUs: 2, CPUModel: "x", Accel: "TCG"}}
	if err := rep.WriteText(&b); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"hull     250.0 MiB  200.0 MiB  300.0 MiB  230.0 MiB  3          3     125.0x runc", "runc     2.0 MiB"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, b.String())
		}
	}
	clean := true
	rep = &MemReport{Kind: "density", Pods: 20, Results: []MemResult{{Runtime: "hull", Started: 20, Clean: &clean, PSS: 1 << 20, Pods: []PodMemory{{PSS: 1 << 20}}}}}
	b.Reset()
	if err := rep.WriteText(&b); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), "20/20") || !strings.Contains(b.String(), "true") {
		t.Errorf("density report:\n%s", b.String())
	}
}

func TestRootOf(t *testing.T) {
	if got := rootOf(Runtime{Argv: []string{"/bin/hull", "--config", "c", "--root", "/r/hull"}}); got != "/r/hull" {
		t.Errorf("rootOf = %q", got)
	}
	if got := rootOf(Runtime{Argv: []string{"/bin/x"}}); got != "" {
		t.Errorf("rootOf without --root = %q", got)
	}
	if FormatBytes(0) != "-" || FormatBytes(512) != "0 KiB" && FormatBytes(512) != "1 KiB" || FormatBytes(3<<20) != "3.0 MiB" {
		t.Errorf("FormatBytes: %s %s %s", FormatBytes(0), FormatBytes(512), FormatBytes(3<<20))
	}
}
