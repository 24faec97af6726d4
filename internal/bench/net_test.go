package bench

import (
	"bytes"
	"strings"
	"testing"
)

func TestIperfBPS(t *testing.T) {
	bps, err := iperfBPS([]byte(`{"start":{},"end":{"sum_sent":{"bits_per_second":2e9},"sum_received":{"bits_per_second":1.5e9}}}`))
	if err != nil || bps != 1.5e9 {
		t.Errorf("iperfBPS = %v, %v; want the receiver's 1.5e9", bps, err)
	}
	for name, out := range map[string]string{
		"not json":      `iperf3: error`,
		"iperf3 error":  `{"error":"unable to connect to server: Connection refused"}`,
		"no throughput": `{"end":{}}`,
	} {
		if _, err := iperfBPS([]byte(out)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestNetReport(t *testing.T) {
	res := withNetRatios([]NetResult{netResult("hull", []float64{3e8, 1e9, 2e8}), netResult("runc", []float64{4e9, 2e9})})
	if res[0].Median != 3e8 || res[0].Min != 2e8 || res[0].Max != 1e9 || res[1].Median != 3e9 {
		t.Fatalf("summaries %+v", res)
	}
	if res[0].Ratio == nil || *res[0].Ratio != 0.1 || *res[1].Ratio != 1 {
		t.Fatalf("ratios %v %v", res[0].Ratio, res[1].Ratio)
	}
	rep := &NetReport{Seconds: 5, Measures: []NetMeasure{{Title: "TCP host→pod", Results: res}}}
	var b bytes.Buffer
	if err := rep.WriteText(&b); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"TCP host→pod: iperf3, 5 s a run", "hull     300 Mbit/s", "0.10x runc", "3.00 Gbit/s"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, b.String())
		}
	}
}
