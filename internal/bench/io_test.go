package bench

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hullrt/hull/internal/config"
)

func TestParseFio(t *testing.T) {
	// What fio 3.33 printed for fioArgs(16, 5), run on a host.
	out, err := os.ReadFile("testdata/fio-3.33.json")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]fioFigures{
		"seqread":  {MBps: 1048.576, IOPS: 1000},
		"randread": {MBps: 88.768338, IOPS: 21671.957672},
		"seqwrite": {MBps: 1398.101333, IOPS: 1333.333333},
	}
	for name, out := range map[string][]byte{
		"as printed":         out,
		"after a note":       append([]byte("fio: note: both iodepth >= 1 and synchronous I/O engine are selected\n"), out...),
		"stdout of a runner": bytes.ReplaceAll(out, []byte("\n"), []byte("\r\n")),
	} {
		figs, err := parseFio(out)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if len(figs) != len(want) {
			t.Errorf("%s: jobs %v", name, figs)
		}
		for job, w := range want {
			if g := figs[job]; !near(g.MBps, w.MBps) || !near(g.IOPS, w.IOPS) {
				t.Errorf("%s: %s = %+v, want %+v", name, job, g, w)
			}
		}
	}

	job := func(name string, errno int, readBytes, writeBytes int64) map[string]any {
		return map[string]any{"jobname": name, "error": errno,
			"read":  map[string]any{"io_bytes": readBytes, "bw_bytes": readBytes, "iops": 1},
			"write": map[string]any{"io_bytes": writeBytes, "bw_bytes": writeBytes, "iops": 1}}
	}
	doc := func(jobs ...map[string]any) []byte {
		b, _ := json.Marshal(map[string]any{"fio version": "fio-3.33", "jobs": jobs})
		return b
	}
	for name, tc := range map[string]struct {
		out  []byte
		want string
	}{
		"not json":       {[]byte("fio: failed to load engine\n"), "reading fio output"},
		"truncated":      {out[:len(out)/2], "reading fio output"},
		"job error":      {doc(job("seqread", int(syscall.EINVAL), 0, 0)), "fio job seqread failed: invalid argument"},
		"no data":        {doc(job("seqread", 0, 0, 0), job("randread", 0, 1, 0), job("seqwrite", 0, 0, 1)), "fio job seqread moved no data"},
		"missing job":    {doc(job("seqread", 0, 1, 0), job("seqwrite", 0, 0, 1)), "fio output has no job randread"},
		"no jobs at all": {doc(), "fio output has no job seqread"},
	} {
		_, err := parseFio(tc.out)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want %q", name, err, tc.want)
		}
	}
	_, err = parseFio(doc(job("seqread", int(syscall.EINVAL), 0, 0)))
	if !errors.Is(err, syscall.EINVAL) {
		t.Errorf("job error %v does not wrap its errno", err)
	}
}

func near(a, b float64) bool { return a-b < 1e-6 && b-a < 1e-6 }

func TestFioArgs(t *testing.T) {
	args := strings.Join(fioArgs(64, 5), " ")
	for _, want := range []string{
		"fio --output-format=json --thread --directory=/data --ioengine=psync --direct=0 --invalidate=0 --size=64m --runtime=5 ",
		"--name=seqread --stonewall --rw=read --bs=1m --filename=seqread.dat --name=randread",
		"--name=randread --stonewall --rw=randread --bs=4k --filename=randread.dat",
		"--name=seqwrite --stonewall --rw=write --bs=1m --filename=seqwrite.dat --end_fsync=1",
	} {
		if !strings.Contains(args, want) {
			t.Errorf("fio command line lacks %q:\n%s", want, args)
		}
	}
}

func TestIORatios(t *testing.T) {
	res := []IOResult{
		ioResult("hull", "virtio-fs", []fioFigures{{95, 90}, {100, 95}, {90, 86}}),
		ioResult("hull", "virtio-9p", []fioFigures{{250, 240}, {270, 260}}),
		ioResult("runc", "", []fioFigures{{4000, 8000}, {5000, 10000}, {3000, 6000}}),
	}
	if r := res[0].MBps; r.Median != 95 || r.Min != 90 || r.Max != 100 || !slices.Equal(r.Samples, []float64{95, 100, 90}) {
		t.Errorf("MB/s of hull virtio-fs: %+v", r)
	}
	if r := res[1].IOPS; r.Median != 250 || r.Min != 240 || r.Max != 260 {
		t.Errorf("IOPS of hull virtio-9p (mean of the middle two): %+v", r)
	}
	withIORatios(res, false)
	if !near(*res[0].Ratio, 95.0/4000) || !near(*res[1].Ratio, 260.0/4000) || *res[2].Ratio != 1 {
		t.Errorf("MB/s ratios %v %v %v", *res[0].Ratio, *res[1].Ratio, *res[2].Ratio)
	}
	withIORatios(res, true)
	if !near(*res[0].Ratio, 90.0/8000) || !near(*res[1].Ratio, 250.0/8000) {
		t.Errorf("IOPS ratios %v %v", *res[0].Ratio, *res[1].Ratio)
	}
	noBase := withIORatios([]IOResult{ioResult("hull", "virtio-fs", []fioFigures{{1, 1}})}, false)
	if noBase[0].Ratio != nil {
		t.Errorf("ratio without runc: %v", *noBase[0].Ratio)
	}
	if got := res[0].Label() + "|" + res[2].Label(); got != "hull virtio-fs|runc" {
		t.Errorf("labels %q", got)
	}
}

func TestIOReport(t *testing.T) {
	seq := withIORatios([]IOResult{
		ioResult("hull", "virtio-fs", []fioFigures{{95.24, 90.8}}),
		ioResult("runc", "", []fioFigures{{4120, 3929}}),
	}, false)
	rnd := withIORatios([]IOResult{
		ioResult("hull", "virtio-fs", []fioFigures{{20.3, 4965}}),
		ioResult("runc", "", []fioFigures{{3355, 819200}}),
	}, true)
	rep := &IOReport{
		Machine: Machine{CPUs: 2, CPUModel: "AMD EPYC", Accel: "TCG"}, Version: "v1-test",
		Date: time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC), Fio: "fio-3.33", VolumeFS: "ext4", SizeMiB: 64, Seconds: 5,
		Measures: []IOMeasure{
			{Name: "seq_read", Title: "sequential read", About: "1 MiB reads", Unit: "MB/s", Results: seq},
			{Name: "rand_read", Title: "random read", About: "4 KiB reads", Unit: "IOPS", Results: rnd},
		},
		Unavailable: []Unavailable{{"hull virtio-9p", "no image in /var/lib/hull/image-9p (make image-9p)"}},
	}
	var b bytes.Buffer
	if err := rep.WriteText(&b); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"hull virtio-9p: unavailable: no image in /var/lib/hull/image-9p (make image-9p)\n",
		"fio-3.33; volume: a host directory on ext4, bind-mounted at /data; buffered I/O (psync, direct=0), 64 MiB files, at most 5 s a job\n",
		"sequential read: 1 MiB reads; median, min and max in MB/s\n",
		"RUNTIME         MEDIAN     MIN        MAX        IOPS       RUNS  RATIO\n",
		"hull virtio-fs  95.2 MB/s  95.2 MB/s  95.2 MB/s  90.8 IOPS  1     0.023x runc\n",
		"runc            4120 MB/s  4120 MB/s  4120 MB/s  3929 IOPS  1     1.00x runc\n",
		"random read: 4 KiB reads; median, min and max in IOPS\n",
		"hull virtio-fs  4965 IOPS    4965 IOPS    4965 IOPS    20.3 MB/s  1     0.0061x runc\n",
	} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, b.String())
		}
	}
	js, err := json.Marshal(rep)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"unit":"MB/s"`, `"shared_fs":"virtio-fs"`, `"mb_per_s":{"median":95.24`, `"ratio_to_runc":1`} {
		if !strings.Contains(string(js), want) {
			t.Errorf("JSON lacks %s: %s", want, js)
		}
	}
}

func TestFormatRate(t *testing.T) {
	for _, tc := range []struct {
		v    float64
		want string
	}{{4120.4, "4120 MB/s"}, {100, "100 MB/s"}, {95.24, "95.2 MB/s"}, {9.876, "9.88 MB/s"}} {
		if got := FormatRate(tc.v, "MB/s"); got != tc.want {
			t.Errorf("FormatRate(%v) = %q, want %q", tc.v, got, tc.want)
		}
	}
	for r, want := range map[float64]string{1: "1.00x", 0.15: "0.15x", 0.0234: "0.023x", 0.0061: "0.0061x", 0: "0.00x"} {
		if got := formatRatio(r); got != want {
			t.Errorf("formatRatio(%v) = %q, want %q", r, got, want)
		}
	}
}

// The configuration each hull run gets: the caller's, with the shared
// filesystem, and for virtio-9p the image that has 9p.
func TestHullConfig(t *testing.T) {
	dir := t.TempDir()
	cloud := fakeImage(t, filepath.Join(dir, "image"), "6.1.0-56-cloud-amd64", []string{"virtio-fs"})
	generic := fakeImage(t, filepath.Join(dir, "image-9p"), "6.1.0-56-amd64", []string{"virtio-fs", "virtio-9p"})
	virtiofsd := filepath.Join(dir, "virtiofsd")
	if err := os.WriteFile(virtiofsd, nil, 0o755); err != nil {
		t.Fatal(err)
	}
	base := config.Default()
	base.Image.Dir = cloud
	base.Storage.Virtiofsd = virtiofsd
	base.Hypervisor.VCPUs = 2
	base.Hypervisor.Kernel = filepath.Join(cloud, "vmlinuz")
	base.Hypervisor.Initrd = filepath.Join(cloud, "initrd.img")
	o := &IOOptions{Config: base, Image9P: generic, Dir: t.TempDir()}

	load := func(kind string) (*config.Config, error) {
		t.Helper()
		path, err := o.hullConfig(kind)
		if err != nil {
			return nil, err
		}
		return config.Load(path)
	}
	fs, err := load("virtio-fs")
	if err != nil {
		t.Fatal(err)
	}
	if fs.Storage.SharedFS != "virtio-fs" || fs.Image.Dir != cloud || fs.Hypervisor.VCPUs != 2 {
		t.Errorf("virtio-fs config: %+v", fs)
	}
	p9, err := load("virtio-9p")
	if err != nil {
		t.Fatal(err)
	}
	if p9.Storage.SharedFS != "virtio-9p" || p9.Image.Dir != generic || p9.Hypervisor.Kernel != filepath.Join(generic, "vmlinuz") || p9.Hypervisor.Initrd != filepath.Join(generic, "initrd.img") {
		t.Errorf("virtio-9p config: %+v", p9)
	}
	if base.Storage.SharedFS != "virtio-fs" || base.Image.Dir != cloud {
		t.Errorf("the caller's config changed: %+v", base)
	}

	// The configured image has 9p: it serves both.
	o.Config.Image.Dir, o.Config.Hypervisor.Kernel, o.Config.Hypervisor.Initrd = generic, filepath.Join(generic, "vmlinuz"), filepath.Join(generic, "initrd.img")
	o.Image9P = filepath.Join(dir, "nowhere")
	if p9, err := load("virtio-9p"); err != nil || p9.Image.Dir != generic {
		t.Errorf("virtio-9p with a configured image that has it: %v, %+v", err, p9)
	}

	// In order: each case changes what the one before set up.
	for _, tc := range []struct {
		name   string
		change func()
		kind   string
		want   string
	}{
		{"no 9p image", func() { o.Config.Image.Dir, o.Config.Hypervisor.Kernel = cloud, filepath.Join(cloud, "vmlinuz") }, "virtio-9p",
			"no image in " + filepath.Join(dir, "nowhere") + " (make image-9p, or hull image build --shared-fs virtio-9p --output " + filepath.Join(dir, "nowhere") + ")"},
		{"9p image without 9p", func() { o.Image9P = cloud }, "virtio-9p",
			"image " + cloud + ": the guest kernel 6.1.0-56-cloud-amd64 has no 9p (rebuild it: hull image build --shared-fs virtio-9p --output " + cloud + ")"},
		{"no virtiofsd", func() { o.Config.Storage.Virtiofsd = filepath.Join(dir, "none") }, "virtio-fs",
			"virtiofsd not found at " + filepath.Join(dir, "none")},
	} {
		tc.change()
		_, err := o.hullConfig(tc.kind)
		var na *notAvailable
		if !errors.As(err, &na) || err.Error() != tc.want {
			t.Errorf("%s: err = %v, want %q", tc.name, err, tc.want)
		}
	}
}

// fakeImage writes an image directory as Build would, for kver, whose
// kernel mounts sharedFS.
func fakeImage(t *testing.T, dir, kver string, sharedFS []string) string {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	m, _ := json.Marshal(map[string]any{"kernelVersion": kver, "digest": "x", "modules": []string{},
		"kernel": "vmlinuz", "initrd": "initrd.img", "sharedFS": sharedFS})
	for name, b := range map[string][]byte{"manifest.json": m, "vmlinuz": nil, "initrd.img": nil} {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}
