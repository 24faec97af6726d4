package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/hullrt/hull/internal/busybox"
	"github.com/hullrt/hull/internal/config"
	"github.com/hullrt/hull/internal/image"
)

// The I/O benchmark runs fio in a container on a volume: a host directory
// bind-mounted at /data, the same directory under every runtime. Reads are
// of files the host wrote before the container started, so they sit in the
// host's page cache and not in the guest's (each hull run boots a fresh
// VM): what is measured is how fast the shared filesystem brings host data
// to the container, which under runc is the host page cache itself. I/O is
// buffered (direct=0): O_DIRECT is not honoured alike by virtio-fs and 9p,
// and applications mostly do buffered I/O. Writes go to a new file and end
// with an fsync, so they count until the data is on the host's disk.
const ioVolume = "/data"

// ioMeasures are the fio jobs, in the order they run. iops says the job's
// figure is I/O operations per second rather than MB/s.
var ioMeasures = []struct {
	name, job, title, about string
	write, iops             bool
	args                    []string
}{
	{
		name: "seq_read", job: "seqread", title: "sequential read",
		about: "1 MiB reads of a file the host wrote before the container started",
		args:  []string{"--rw=read", "--bs=1m", "--filename=seqread.dat"},
	},
	{
		name: "rand_read", job: "randread", title: "random read", iops: true,
		about: "4 KiB reads at random offsets of another such file",
		args:  []string{"--rw=randread", "--bs=4k", "--filename=randread.dat"},
	},
	{
		name: "seq_write", job: "seqwrite", title: "sequential write", write: true,
		about: "1 MiB writes of a new file, then fsync",
		args:  []string{"--rw=write", "--bs=1m", "--filename=seqwrite.dat", "--end_fsync=1"},
	},
}

// IOOptions says what bench io measures.
type IOOptions struct {
	// Config is hull's configuration; each hull run uses a copy that sets
	// storage.shared_fs and, for virtio-9p, the image.
	Config *config.Config
	// Hull is the hull binary.
	Hull string
	// SharedFS lists the shared filesystems to run hull with.
	SharedFS []string
	// Image9P is the image for virtio-9p when the configured one has no 9p.
	Image9P string
	// Dir holds the volume, the bundle, configurations and state roots;
	// the caller removes it.
	Dir string
	// Runs is the number of runs of each runtime.
	Runs int
	// SizeMiB is the size of each file fio reads or writes.
	SizeMiB int
	// Seconds bounds each fio job.
	Seconds  int
	Version  string
	Progress io.Writer
}

// IOReport is what `hull bench io` prints.
type IOReport struct {
	Machine     Machine       `json:"machine"`
	Version     string        `json:"hull_version"`
	Date        time.Time     `json:"date"`
	Fio         string        `json:"fio_version"`
	VolumeFS    string        `json:"volume_fs"`
	SizeMiB     int           `json:"size_mib"`
	Seconds     int           `json:"max_seconds_per_job"`
	Measures    []IOMeasure   `json:"measures"`
	Unavailable []Unavailable `json:"unavailable,omitempty"`
}

// IOMeasure is one fio job under each runtime.
type IOMeasure struct {
	Name    string     `json:"name"`
	Title   string     `json:"title"`
	About   string     `json:"about"`
	Unit    string     `json:"unit"` // "MB/s" or "IOPS": what Ratio compares
	Results []IOResult `json:"results"`
}

// IOResult is one fio job under one runtime (and shared filesystem).
type IOResult struct {
	Runtime  string `json:"runtime"`
	SharedFS string `json:"shared_fs,omitempty"`
	MBps     Rates  `json:"mb_per_s"`
	IOPS     Rates  `json:"iops"`
	// Ratio is the median of the measure's Unit over runc's.
	Ratio *float64 `json:"ratio_to_runc,omitempty"`
}

// Rates summarises samples of a throughput.
type Rates struct {
	Median  float64   `json:"median"`
	Min     float64   `json:"min"`
	Max     float64   `json:"max"`
	Samples []float64 `json:"samples"`
}

// Label names the result in a table: the runtime, and for hull its shared
// filesystem.
func (r IOResult) Label() string {
	return strings.TrimSpace(r.Runtime + " " + r.SharedFS)
}

// ioTarget is a runtime, with a shared filesystem for hull, that runs fio.
type ioTarget struct {
	rt       Runtime
	sharedFS string
}

// RunIO measures fio's sequential read, random read and sequential write
// under hull with each shared filesystem and under runc, interleaving them
// run by run so that noise on the machine hits them alike.
func RunIO(ctx context.Context, o IOOptions) (*IOReport, error) {
	if o.Runs < 1 || o.SizeMiB < 1 || o.Seconds < 1 {
		return nil, errors.New("runs, size and seconds must be at least 1")
	}
	fio, err := exec.LookPath("fio")
	if err != nil {
		return nil, errors.New("fio not found (apt-get install fio)")
	}
	progress := o.Progress
	if progress == nil {
		progress = io.Discard
	}
	rep := &IOReport{Machine: DetectMachine(), Version: o.Version, Date: time.Now().UTC(), SizeMiB: o.SizeMiB, Seconds: o.Seconds}
	if out, err := exec.CommandContext(ctx, fio, "--version").Output(); err == nil {
		rep.Fio = strings.TrimSpace(string(out))
	}

	var targets []ioTarget
	for _, kind := range o.SharedFS {
		cfgPath, err := o.hullConfig(kind)
		if err != nil {
			var na *notAvailable
			if !errors.As(err, &na) {
				return nil, err
			}
			rep.Unavailable = append(rep.Unavailable, Unavailable{"hull " + kind, na.reason})
			continue
		}
		rt, err := Find("hull", filepath.Join(o.Dir, "state", "hull-"+kind), []string{o.Hull, "--config", cfgPath})
		if err != nil {
			return nil, err
		}
		targets = append(targets, ioTarget{rt, kind})
	}
	if rt, err := Find(Baseline, filepath.Join(o.Dir, "state", Baseline), nil); err != nil {
		rep.Unavailable = append(rep.Unavailable, Unavailable{Baseline, err.Error()})
	} else {
		targets = append(targets, ioTarget{rt: rt})
	}
	if len(targets) == 0 {
		return nil, errors.New("no runtime to measure")
	}

	volume := filepath.Join(o.Dir, "volume")
	fmt.Fprintf(progress, "writing %d MiB files to read into %s\n", o.SizeMiB, volume)
	if err := writeReadFiles(volume, o.SizeMiB); err != nil {
		return nil, err
	}
	rep.VolumeFS = fsName(volume)
	bundle := filepath.Join(o.Dir, "bundle")
	if err := writeIOBundle(bundle, fio, volume, fioArgs(o.SizeMiB, o.Seconds)); err != nil {
		return nil, err
	}

	// samples[target][measure] are one run's figures each.
	samples := make([][][]fioFigures, len(targets))
	for i := range samples {
		samples[i] = make([][]fioFigures, len(ioMeasures))
	}
	b := &bencher{timeout: DefaultTimeout, progress: progress}
	for run := 1; run <= o.Runs; run++ {
		for i, tg := range targets {
			label := IOResult{Runtime: tg.rt.Name, SharedFS: tg.sharedFS}.Label()
			fmt.Fprintf(progress, "run %d/%d: %s\n", run, o.Runs, label)
			id := fmt.Sprintf("hull-bench-io-%d-%d-%d", os.Getpid(), run, i)
			s, err := b.launch(ctx, tg.rt, bundle, id)
			if err != nil {
				return nil, err
			}
			figs, err := parseFio([]byte(s.stdout))
			if err != nil {
				return nil, fmt.Errorf("%s run %d: %w", label, run, err)
			}
			for m, ms := range ioMeasures {
				samples[i][m] = append(samples[i][m], figs[ms.job])
			}
			if err := os.Remove(filepath.Join(volume, "seqwrite.dat")); err != nil && !errors.Is(err, os.ErrNotExist) {
				return nil, err
			}
		}
	}

	for m, ms := range ioMeasures {
		unit := "MB/s"
		if ms.iops {
			unit = "IOPS"
		}
		res := make([]IOResult, len(targets))
		for i, tg := range targets {
			res[i] = ioResult(tg.rt.Name, tg.sharedFS, samples[i][m])
		}
		rep.Measures = append(rep.Measures, IOMeasure{Name: ms.name, Title: ms.title, About: ms.about, Unit: unit, Results: withIORatios(res, ms.iops)})
	}
	return rep, nil
}

// notAvailable is a hull variant this host cannot run, and why.
type notAvailable struct{ reason string }

func (e *notAvailable) Error() string { return e.reason }

// hullConfig writes the configuration hull runs with for shared filesystem
// kind and returns its path: the caller's, with storage.shared_fs set and,
// for virtio-9p when the configured image has no 9p, o.Image9P's image.
func (o *IOOptions) hullConfig(kind string) (string, error) {
	cfg := *o.Config
	cfg.Storage.SharedFS = kind
	img, err := image.Load(cfg.Image.Dir)
	own := err == nil && img.Kernel == cfg.Hypervisor.Kernel
	switch {
	case own && img.CanMount(kind) == nil:
	case kind == "virtio-9p":
		img9p, err := image.Load(o.Image9P)
		if err != nil {
			return "", &notAvailable{fmt.Sprintf("no image in %s (make image-9p, or hull image build --shared-fs virtio-9p --output %s)", o.Image9P, o.Image9P)}
		}
		if err := img9p.CanMount(kind); err != nil {
			return "", &notAvailable{fmt.Sprintf("image %s: %v (rebuild it: hull image build --shared-fs virtio-9p --output %s)", o.Image9P, err, o.Image9P)}
		}
		cfg.Image.Dir, cfg.Hypervisor.Kernel, cfg.Hypervisor.Initrd = o.Image9P, img9p.Kernel, img9p.Initrd
	case own:
		return "", &notAvailable{"image " + cfg.Image.Dir + ": " + img.CanMount(kind).Error()}
	}
	if kind == "virtio-fs" {
		if _, err := os.Stat(cfg.Storage.Virtiofsd); err != nil {
			return "", &notAvailable{"virtiofsd not found at " + cfg.Storage.Virtiofsd}
		}
	}
	path := filepath.Join(o.Dir, "hull-"+kind+".toml")
	var b bytes.Buffer
	if err := cfg.Encode(&b); err != nil {
		return "", fmt.Errorf("writing hull configuration: %w", err)
	}
	if err := os.WriteFile(path, b.Bytes(), 0o600); err != nil {
		return "", fmt.Errorf("writing hull configuration: %w", err)
	}
	return path, nil
}

// writeReadFiles fills dir with the files the read jobs read, of random
// bytes so that nothing on the way can compress them.
func writeReadFiles(dir string, sizeMiB int) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	rng := rand.NewChaCha8([32]byte{'h', 'u', 'l', 'l'})
	chunk := make([]byte, 1<<20)
	for _, name := range []string{"seqread.dat", "randread.dat"} {
		f, err := os.Create(filepath.Join(dir, name))
		if err != nil {
			return err
		}
		for i := 0; i < sizeMiB && err == nil; i++ {
			_, _ = rng.Read(chunk)
			_, err = f.Write(chunk)
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("writing %s: %w", name, err)
		}
	}
	return nil
}

// writeIOBundle writes a busybox bundle with fio and its libraries that
// runs args with volume bind-mounted read-write at /data.
func writeIOBundle(bundle, fio, volume string, args []string) error {
	rootfs := filepath.Join(bundle, "rootfs")
	if err := os.MkdirAll(bundle, 0o755); err != nil {
		return err
	}
	if err := busybox.WriteRootfs(rootfs); err != nil {
		return err
	}
	if err := busybox.AddBinary(rootfs, fio); err != nil {
		return fmt.Errorf("copying fio into the bundle: %w", err)
	}
	spec := busybox.Spec(args)
	spec.Root.Path = rootfs
	spec.Mounts = append(spec.Mounts, specs.Mount{Destination: ioVolume, Type: "bind", Source: volume, Options: []string{"rbind", "rw"}})
	return busybox.WriteSpec(bundle, spec)
}

// fioArgs is fio's command line: the jobs of ioMeasures one after the
// other (stonewall), each on its own file, threads rather than processes
// (no SysV shared memory needed), JSON on stdout.
func fioArgs(sizeMiB, seconds int) []string {
	args := []string{"fio", "--output-format=json", "--thread", "--directory=" + ioVolume,
		"--ioengine=psync", "--direct=0", "--invalidate=0",
		fmt.Sprintf("--size=%dm", sizeMiB), fmt.Sprintf("--runtime=%d", seconds)}
	for _, m := range ioMeasures {
		args = append(args, "--name="+m.job, "--stonewall")
		args = append(args, m.args...)
	}
	return args
}

// fioFigures is what one fio job achieved.
type fioFigures struct {
	MBps float64
	IOPS float64
}

// parseFio reads fio's JSON output and returns each job's figures, by job
// name: of its reads, or of its writes for a job that wrote.
func parseFio(out []byte) (map[string]fioFigures, error) {
	// fio may print notes before the JSON document.
	if i := bytes.IndexByte(out, '{'); i > 0 {
		out = out[i:]
	}
	type dir struct {
		BwBytes float64 `json:"bw_bytes"`
		IOPS    float64 `json:"iops"`
		IOBytes int64   `json:"io_bytes"`
	}
	var r struct {
		Jobs []struct {
			Name  string `json:"jobname"`
			Error int    `json:"error"`
			Read  dir    `json:"read"`
			Write dir    `json:"write"`
		} `json:"jobs"`
	}
	if err := json.Unmarshal(out, &r); err != nil {
		return nil, fmt.Errorf("reading fio output: %w", err)
	}
	figs := make(map[string]fioFigures)
	for _, j := range r.Jobs {
		if j.Error != 0 {
			return nil, fmt.Errorf("fio job %s failed: %w", j.Name, unix.Errno(j.Error))
		}
		d := j.Read
		if j.Write.IOBytes > 0 {
			d = j.Write
		}
		if d.IOBytes == 0 || d.BwBytes <= 0 {
			return nil, fmt.Errorf("fio job %s moved no data", j.Name)
		}
		figs[j.Name] = fioFigures{MBps: d.BwBytes / 1e6, IOPS: d.IOPS}
	}
	for _, m := range ioMeasures {
		if _, ok := figs[m.job]; !ok {
			return nil, fmt.Errorf("fio output has no job %s", m.job)
		}
	}
	return figs, nil
}

func ioResult(runtime, sharedFS string, samples []fioFigures) IOResult {
	mbps := make([]float64, len(samples))
	iops := make([]float64, len(samples))
	for i, s := range samples {
		mbps[i], iops[i] = s.MBps, s.IOPS
	}
	return IOResult{Runtime: runtime, SharedFS: sharedFS, MBps: summarizeFloats(mbps), IOPS: summarizeFloats(iops)}
}

// withIORatios sets each result's ratio to the Baseline's median, of IOPS
// or of MB/s.
func withIORatios(res []IOResult, iops bool) []IOResult {
	pick := func(r IOResult) float64 {
		if iops {
			return r.IOPS.Median
		}
		return r.MBps.Median
	}
	i := slices.IndexFunc(res, func(r IOResult) bool { return r.Runtime == Baseline })
	if i < 0 || pick(res[i]) <= 0 {
		return res
	}
	for j := range res {
		r := pick(res[j]) / pick(res[i])
		res[j].Ratio = &r
	}
	return res
}

// fsName names the filesystem dir is on, for the report.
func fsName(dir string) string {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return "unknown"
	}
	names := map[int64]string{
		unix.EXT4_SUPER_MAGIC: "ext4", unix.XFS_SUPER_MAGIC: "xfs", unix.BTRFS_SUPER_MAGIC: "btrfs",
		unix.TMPFS_MAGIC: "tmpfs", unix.OVERLAYFS_SUPER_MAGIC: "overlay",
	}
	if n, ok := names[int64(st.Type)]; ok {
		return n
	}
	return fmt.Sprintf("0x%x", st.Type)
}

// WriteText writes the report as a table per fio job.
func (r *IOReport) WriteText(w io.Writer) error {
	var b bytes.Buffer
	writeHeader(&b, r.Machine, r.Version, r.Date, r.Unavailable)
	fmt.Fprintf(&b, "%s; volume: a host directory on %s, bind-mounted at %s; buffered I/O (psync, direct=0), %d MiB files, at most %d s a job\n",
		r.Fio, r.VolumeFS, ioVolume, r.SizeMiB, r.Seconds)
	for _, m := range r.Measures {
		other := "IOPS"
		if m.Unit == "IOPS" {
			other = "MB/s"
		}
		fmt.Fprintf(&b, "\n%s: %s; median, min and max in %s\n", m.Title, m.About, m.Unit)
		tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
		fmt.Fprintf(tw, "RUNTIME\tMEDIAN\tMIN\tMAX\t%s\tRUNS\tRATIO\n", other)
		for _, res := range m.Results {
			main, sec := res.MBps, res.IOPS
			if m.Unit == "IOPS" {
				main, sec = res.IOPS, res.MBps
			}
			ratio := "-"
			if res.Ratio != nil {
				ratio = formatRatio(*res.Ratio) + " " + Baseline
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%s\n", res.Label(),
				FormatRate(main.Median, m.Unit), FormatRate(main.Min, m.Unit), FormatRate(main.Max, m.Unit),
				FormatRate(sec.Median, other), len(main.Samples), ratio)
		}
		tw.Flush()
	}
	_, err := w.Write(b.Bytes())
	return err
}

// FormatRate prints v with its unit and three significant digits or
// more, as a whole number from 100 up.
func FormatRate(v float64, unit string) string {
	switch {
	case v >= 100:
		return fmt.Sprintf("%.0f %s", v, unit)
	case v >= 10:
		return fmt.Sprintf("%.1f %s", v, unit)
	default:
		return fmt.Sprintf("%.2f %s", v, unit)
	}
}

// formatRatio prints a ratio with two decimals, or two significant digits
// below 0.1, where a virtual machine's throughput often lies.
func formatRatio(r float64) string {
	if r > 0 && r < 0.1 {
		return fmt.Sprintf("%.2gx", r)
	}
	return fmt.Sprintf("%.2fx", r)
}
