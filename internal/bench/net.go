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
	"strings"
	"text/tabwriter"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/hullrt/hull/internal/busybox"
)

// The network benchmark runs iperf3 in containers whose network namespaces
// hang off a bridge, all in namespaces of the benchmark's own, so that the
// host's network is untouched:
//
//	hull-bench-host: bridge hbbr0 10.97.0.1/24 (stands for the host)
//	hull-bench-pod0: eth0 10.97.0.10/24, veth to the bridge
//	hull-bench-pod1: eth0 10.97.0.11/24, veth to the bridge
const (
	netHost   = "hull-bench-host"
	netSubnet = "10.97.0"
)

func netPod(i int) string   { return fmt.Sprintf("hull-bench-pod%d", i) }
func netPodIP(i int) string { return fmt.Sprintf("%s.%d", netSubnet, 10+i) }

// NetOptions says what bench net measures.
type NetOptions struct {
	Runtimes []string
	Hull     []string
	// Dir holds bundles and state roots; the caller removes it.
	Dir      string
	Runs     int
	Seconds  int
	Version  string
	Progress io.Writer
}

// NetReport is what `hull bench net` prints; throughput in bits/s.
type NetReport struct {
	Machine     Machine       `json:"machine"`
	Version     string        `json:"hull_version"`
	Date        time.Time     `json:"date"`
	Seconds     int           `json:"seconds_per_run"`
	Measures    []NetMeasure  `json:"measures"`
	Unavailable []Unavailable `json:"unavailable,omitempty"`
}

// NetMeasure is one path measured under each runtime.
type NetMeasure struct {
	Name    string      `json:"name"`
	Title   string      `json:"title"`
	Results []NetResult `json:"results"`
}

// NetResult is one path under one runtime.
type NetResult struct {
	Runtime string    `json:"runtime"`
	Median  float64   `json:"median_bps"`
	Min     float64   `json:"min_bps"`
	Max     float64   `json:"max_bps"`
	Ratio   *float64  `json:"ratio_to_runc,omitempty"`
	Samples []float64 `json:"samples_bps"`
}

// RunNet measures TCP throughput host→pod and pod→pod under each runtime.
func RunNet(ctx context.Context, o NetOptions) (*NetReport, error) {
	if _, err := exec.LookPath("iperf3"); err != nil {
		return nil, errors.New("iperf3 not found (apt-get install iperf3)")
	}
	progress := o.Progress
	if progress == nil {
		progress = io.Discard
	}
	rootfs := filepath.Join(o.Dir, "rootfs")
	if err := busybox.WriteRootfs(rootfs); err != nil {
		return nil, err
	}
	iperf, _ := exec.LookPath("iperf3")
	if err := busybox.AddBinary(rootfs, iperf); err != nil {
		return nil, fmt.Errorf("copying iperf3 into the bundle: %w", err)
	}
	teardown, err := netTopology(ctx)
	defer teardown()
	if err != nil {
		return nil, err
	}
	rep := &NetReport{Machine: DetectMachine(), Version: o.Version, Date: time.Now().UTC(), Seconds: o.Seconds}
	hostToPod := NetMeasure{Name: "host_to_pod", Title: "TCP host→pod"}
	podToPod := NetMeasure{Name: "pod_to_pod", Title: "TCP pod→pod"}
	for _, name := range o.Runtimes {
		rt, err := Find(name, filepath.Join(o.Dir, "state", name), o.Hull)
		if err != nil {
			rep.Unavailable = append(rep.Unavailable, Unavailable{name, err.Error()})
			continue
		}
		n := &netBencher{o: o, rt: rt, rootfs: rootfs}
		var hp, pp []float64
		for i := 0; i < o.Runs; i++ {
			fmt.Fprintf(progress, "%s: host→pod run %d/%d\n", name, i+1, o.Runs)
			bps, err := n.hostToPod(ctx, i)
			if err == nil {
				hp = append(hp, bps)
				fmt.Fprintf(progress, "%s: pod→pod run %d/%d\n", name, i+1, o.Runs)
				bps, err = n.podToPod(ctx, i)
				pp = append(pp, bps)
			}
			if err != nil {
				if ctx.Err() != nil {
					return nil, ctx.Err()
				}
				if rt.Optional {
					rep.Unavailable = append(rep.Unavailable, Unavailable{name, err.Error()})
					hp, pp = nil, nil
					break
				}
				return nil, fmt.Errorf("%s: %w", name, err)
			}
		}
		if len(hp) > 0 {
			hostToPod.Results = append(hostToPod.Results, netResult(name, hp))
			podToPod.Results = append(podToPod.Results, netResult(name, pp))
		}
	}
	for _, m := range []NetMeasure{hostToPod, podToPod} {
		m.Results = withNetRatios(m.Results)
		rep.Measures = append(rep.Measures, m)
	}
	return rep, nil
}

func netResult(runtime string, samples []float64) NetResult {
	r := summarizeFloats(samples)
	return NetResult{Runtime: runtime, Median: r.Median, Min: r.Min, Max: r.Max, Samples: samples}
}

func withNetRatios(res []NetResult) []NetResult {
	i := slices.IndexFunc(res, func(r NetResult) bool { return r.Runtime == Baseline })
	if i < 0 || res[i].Median <= 0 {
		return res
	}
	for j := range res {
		r := res[j].Median / res[i].Median
		res[j].Ratio = &r
	}
	return res
}

// netTopology makes the namespaces, bridge and veths; the returned func
// removes them (and with them every veth and the bridge).
func netTopology(ctx context.Context) (func(), error) {
	namespaces := []string{netHost, netPod(0), netPod(1)}
	teardown := func() {
		for _, ns := range namespaces {
			_ = exec.Command("ip", "netns", "del", ns).Run()
		}
	}
	teardown() // a previous run that was killed
	cmds := [][]string{}
	for _, ns := range namespaces {
		cmds = append(cmds, []string{"ip", "netns", "add", ns}, []string{"ip", "-n", ns, "link", "set", "lo", "up"})
	}
	cmds = append(cmds,
		[]string{"ip", "-n", netHost, "link", "add", "hbbr0", "type", "bridge"},
		[]string{"ip", "-n", netHost, "addr", "add", netSubnet + ".1/24", "dev", "hbbr0"},
		[]string{"ip", "-n", netHost, "link", "set", "hbbr0", "up"},
	)
	for i := 0; i < 2; i++ {
		veth := fmt.Sprintf("hbveth%d", i)
		cmds = append(cmds,
			[]string{"ip", "-n", netHost, "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", netPod(i)},
			[]string{"ip", "-n", netHost, "link", "set", veth, "master", "hbbr0", "up"},
			[]string{"ip", "-n", netPod(i), "addr", "add", netPodIP(i) + "/24", "dev", "eth0"},
			[]string{"ip", "-n", netPod(i), "link", "set", "eth0", "up"},
			[]string{"ip", "-n", netPod(i), "route", "add", "default", "via", netSubnet + ".1"},
		)
	}
	for _, c := range cmds {
		if out, err := exec.CommandContext(ctx, c[0], c[1:]...).CombinedOutput(); err != nil {
			return teardown, fmt.Errorf("%s: %v: %s", strings.Join(c, " "), err, bytes.TrimSpace(out))
		}
	}
	return teardown, nil
}

type netBencher struct {
	o      NetOptions
	rt     Runtime
	rootfs string
	seq    int
}

// container starts args in pod's namespace under the runtime and returns
// the running command; its stdout collects in out.
func (n *netBencher) container(ctx context.Context, pod int, args []string, out *bytes.Buffer) (*exec.Cmd, string, error) {
	n.seq++
	id := fmt.Sprintf("hull-bench-net-%s-%d-%d", n.rt.Name, os.Getpid(), n.seq)
	bundle := filepath.Join(n.o.Dir, id)
	if err := os.MkdirAll(bundle, 0o755); err != nil {
		return nil, "", err
	}
	spec := busybox.Spec(args)
	spec.Root.Path = n.rootfs // shared by all the bundles (runc refuses a symlink)
	for i, ns := range spec.Linux.Namespaces {
		if ns.Type == specs.NetworkNamespace {
			spec.Linux.Namespaces[i].Path = "/var/run/netns/" + netPod(pod)
		}
	}
	if err := busybox.WriteSpec(bundle, spec); err != nil {
		return nil, "", err
	}
	cmd := exec.CommandContext(ctx, n.rt.Argv[0], append(slices.Clone(n.rt.Argv[1:]), "run", "--bundle", bundle, id)...)
	var errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = out, &errb
	if err := cmd.Start(); err != nil {
		return nil, "", err
	}
	return cmd, id, nil
}

// iperfClient runs iperf3 -c against ip through run (in the host's
// namespace, or in a container), retrying while the server comes up, and
// returns the receiver's bits per second.
func (n *netBencher) iperfClient(ctx context.Context, run func(args []string) ([]byte, error), ip string) (float64, error) {
	args := []string{"iperf3", "-c", ip, "-t", fmt.Sprint(n.o.Seconds), "-J"}
	var lastErr error
	for deadline := time.Now().Add(2 * time.Minute); time.Now().Before(deadline); {
		// A client that finds no server yet fails (exit 1, or an error in
		// its JSON): the server's container is still starting.
		out, err := run(args)
		if err == nil {
			bps, err := iperfBPS(out)
			if err == nil {
				return bps, nil
			}
			lastErr = err
		} else {
			lastErr = err
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
	return 0, fmt.Errorf("iperf3 client: %w", lastErr)
}

// iperfBPS reads the receiver's throughput from iperf3's JSON output.
func iperfBPS(out []byte) (float64, error) {
	var r struct {
		Error string `json:"error"`
		End   struct {
			SumReceived struct {
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum_received"`
		} `json:"end"`
	}
	if err := json.Unmarshal(out, &r); err != nil {
		return 0, fmt.Errorf("reading iperf3 output: %w", err)
	}
	if r.Error != "" {
		return 0, errors.New("iperf3: " + r.Error)
	}
	if r.End.SumReceived.BitsPerSecond <= 0 {
		return 0, errors.New("iperf3 reported no throughput")
	}
	return r.End.SumReceived.BitsPerSecond, nil
}

func (n *netBencher) server(ctx context.Context) (*exec.Cmd, string, error) {
	var out bytes.Buffer
	return n.container(ctx, 0, []string{"iperf3", "-s", "-1"}, &out)
}

func (n *netBencher) finish(cmd *exec.Cmd, id string) {
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		_ = cmd.Process.Kill()
		<-done
	}
	if n.rt.Deletes {
		n.rt.delete(id)
	}
}

func (n *netBencher) hostToPod(ctx context.Context, _ int) (float64, error) {
	srv, id, err := n.server(ctx)
	if err != nil {
		return 0, err
	}
	defer n.finish(srv, id)
	bps, err := n.iperfClient(ctx, func(args []string) ([]byte, error) {
		return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", netHost}, args...)...).Output()
	}, netPodIP(0))
	return bps, withServerLog(err, srv)
}

// withServerLog adds what the server's runtime printed to err.
func withServerLog(err error, srv *exec.Cmd) error {
	if err == nil {
		return nil
	}
	if b, ok := srv.Stderr.(*bytes.Buffer); ok && b.Len() > 0 {
		return fmt.Errorf("%w (server: %s)", err, strings.TrimSpace(b.String()))
	}
	return err
}

func (n *netBencher) podToPod(ctx context.Context, _ int) (float64, error) {
	srv, id, err := n.server(ctx)
	if err != nil {
		return 0, err
	}
	defer n.finish(srv, id)
	bps, err := n.iperfClient(ctx, func(args []string) ([]byte, error) {
		var out bytes.Buffer
		cmd, cid, err := n.container(ctx, 1, args, &out)
		if err != nil {
			return nil, err
		}
		err = cmd.Wait()
		if n.rt.Deletes {
			n.rt.delete(cid)
		}
		if err != nil {
			return nil, fmt.Errorf("%w: %s", err, out.String())
		}
		return out.Bytes(), nil
	}, netPodIP(0))
	return bps, withServerLog(err, srv)
}

// WriteText writes the report as a table per path.
func (r *NetReport) WriteText(w io.Writer) error {
	var b bytes.Buffer
	writeHeader(&b, r.Machine, r.Version, r.Date, r.Unavailable)
	for _, m := range r.Measures {
		fmt.Fprintf(&b, "\n%s: iperf3, %d s a run, receiver's throughput\n", m.Title, r.Seconds)
		tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "RUNTIME\tMEDIAN\tMIN\tMAX\tRUNS\tRATIO")
		for _, res := range m.Results {
			ratio := "-"
			if res.Ratio != nil {
				ratio = fmt.Sprintf("%.2fx %s", *res.Ratio, Baseline)
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\n", res.Runtime, FormatBPS(res.Median), FormatBPS(res.Min), FormatBPS(res.Max), len(res.Samples), ratio)
		}
		tw.Flush()
	}
	_, err := w.Write(b.Bytes())
	return err
}

// FormatBPS prints a throughput in Mbit/s or Gbit/s.
func FormatBPS(bps float64) string {
	if bps >= 1e9 {
		return fmt.Sprintf("%.2f Gbit/s", bps/1e9)
	}
	return fmt.Sprintf("%.0f Mbit/s", bps/1e6)
}
