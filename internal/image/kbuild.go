package image

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// HullKernelConfig is the configuration fragment of hull's tuned guest
// kernel (internal/image/kernel/hull.config), merged over tinyconfig.
//
//go:embed kernel/hull.config
var HullKernelConfig []byte

//go:embed kernel/*.patch
var hullKernelPatches embed.FS

// KernelPatch is a change to the kernel source, applied with patch -p1
// before it is configured.
type KernelPatch struct {
	Name string
	Diff []byte
}

// HullKernelPatches are the patches of hull's tuned guest kernel
// (internal/image/kernel/*.patch), in the order of their names.
func HullKernelPatches() []KernelPatch {
	ents, err := hullKernelPatches.ReadDir("kernel")
	if err != nil {
		panic(err) // embedded: cannot fail
	}
	var ps []KernelPatch
	for _, e := range ents {
		b, err := hullKernelPatches.ReadFile("kernel/" + e.Name())
		if err != nil {
			panic(err)
		}
		ps = append(ps, KernelPatch{Name: e.Name(), Diff: b})
	}
	return ps
}

// kernelBuilderVersion is bumped whenever BuildKernel would build a
// different kernel from the same source and fragment.
const kernelBuilderVersion = 1

// Defaults of KernelBuildOptions.
const (
	DefaultKernelCache = "/var/cache/hull/kernel"
	DefaultSourceDir   = "/usr/src"
)

// Reproducible builds: kbuild writes these into the kernel (uname -v).
// The timestamp must be one date(1) parses: kbuild also stamps the
// built-in initramfs with it.
var kbuildEnv = []string{
	"ARCH=x86_64",
	"KBUILD_BUILD_TIMESTAMP=1970-01-01 00:00:00 UTC",
	"KBUILD_BUILD_USER=hull",
	"KBUILD_BUILD_HOST=hull",
	"KBUILD_BUILD_VERSION=1",
	// Set, and empty: setlocalversion appends no "+" for a source tree
	// that happens to be inside a git checkout.
	"LOCALVERSION=",
	"LC_ALL=C",
}

// ErrKernelNotBuilt is wrapped by FindKernel's error when the tuned kernel
// for the current source and fragment is not in the cache.
var ErrKernelNotBuilt = errors.New("tuned kernel not built")

// KernelBuildOptions says what BuildKernel builds from and where it keeps
// the result.
type KernelBuildOptions struct {
	// Source is a kernel source tarball; "" takes the newest
	// linux-source-*.tar.* in DefaultSourceDir (Debian's linux-source).
	Source string
	// Fragment is the configuration fragment; nil means HullKernelConfig.
	Fragment []byte
	// Patches are applied to the source in order; nil means
	// HullKernelPatches, an empty slice none.
	Patches  []KernelPatch
	CacheDir string // default DefaultKernelCache
	Jobs     int    // make -j; 0 means one per CPU
	Force    bool   // rebuild even when the cache has this kernel
	// Keep is how many kernels the cache keeps, this one and the most
	// recently used others (kcache.go); 0 keeps all.
	Keep int
	// Progress receives progress lines; may be nil.
	Progress io.Writer
	// ProgressEvery is how often a line reports the compile's progress;
	// 0 means every 30 seconds.
	ProgressEvery time.Duration
}

// Kernel is a tuned kernel in the cache: a directory named by its key that
// holds bzImage, vmlinux (the same kernel, uncompressed, with a PVH entry),
// config (its final .config) and kernel.json.
type Kernel struct {
	Dir     string `json:"-"`
	BzImage string `json:"-"`
	Vmlinux string `json:"-"`
	Config  string `json:"-"`
	Cached  bool   `json:"-"` // true when the cache already had it

	Release       string   `json:"release"`           // uname -r: 6.1.192-hull
	Key           string   `json:"key"`               // digest of everything it is built from
	Source        string   `json:"source"`            // the tarball's file name
	SourceVersion string   `json:"sourceVersion"`     // its Debian package version, when it is one's
	SourceDigest  string   `json:"sourceDigest"`      // SHA-256 of the tarball
	Fragment      string   `json:"fragment"`          // SHA-256 of the fragment
	Patches       []string `json:"patches,omitempty"` // the source patches applied, by name
	Compiler      string   `json:"compiler"`          // first line of gcc --version; not part of the key
}

// File names in a cache entry.
const (
	kernelBzImage  = "bzImage"
	kernelVmlinux  = "vmlinux"
	kernelConfig   = "config"
	kernelManifest = "kernel.json"
)

// kernelInputs is what a tuned kernel is built from; key names it.
type kernelInputs struct {
	source, sourceVersion string
	sourceSum             [sha256.Size]byte
	fragment              []byte
	patches               []KernelPatch
}

// key identifies a kernel by its inputs: the builder's version, the
// source tarball's digest, the fragment's and the patches'. The compiler
// is not part of it (a gcc update does not rebuild; --force does).
func (in kernelInputs) key() string {
	h := sha256.New()
	fmt.Fprintf(h, "hull-kernel %d\nbase tinyconfig\nsource %x\nfragment %x\n",
		kernelBuilderVersion, in.sourceSum, sha256.Sum256(in.fragment))
	for _, p := range in.patches {
		fmt.Fprintf(h, "patch %s %x\n", p.Name, sha256.Sum256(p.Diff))
	}
	return hex.EncodeToString(h.Sum(nil))
}

// entryDir is the cache entry of key: 16 hex digits are plenty to tell a
// handful of builds apart; kernel.json holds the whole key.
func entryDir(cacheDir, key string) string { return filepath.Join(cacheDir, key[:16]) }

func (o *KernelBuildOptions) defaults() {
	if o.CacheDir == "" {
		o.CacheDir = DefaultKernelCache
	}
	if o.Fragment == nil {
		o.Fragment = HullKernelConfig
	}
	if o.Patches == nil {
		o.Patches = HullKernelPatches()
	}
	if o.Jobs <= 0 {
		o.Jobs = runtime.NumCPU()
	}
	if o.ProgressEvery <= 0 {
		o.ProgressEvery = 30 * time.Second
	}
}

// inputs finds the source and digests what the kernel is built from.
func (o *KernelBuildOptions) inputs() (kernelInputs, error) {
	in := kernelInputs{source: o.Source, fragment: o.Fragment, patches: o.Patches}
	if in.source == "" {
		var err error
		if in.source, err = findKernelSource(DefaultSourceDir); err != nil {
			return in, err
		}
	}
	sum, err := hashFile(in.source)
	if err != nil {
		return in, fmt.Errorf("kernel source: %w", err)
	}
	in.sourceSum = sum
	in.sourceVersion = packageVersion(in.source)
	return in, nil
}

// findKernelSource returns the newest linux-source tarball in dir.
func findKernelSource(dir string) (string, error) {
	matches, _ := filepath.Glob(filepath.Join(dir, "linux-source-*.tar*"))
	best := ""
	for _, m := range matches {
		if !slices.ContainsFunc([]string{".tar", ".tar.xz", ".tar.gz", ".tar.bz2", ".tar.zst"}, func(ext string) bool {
			return strings.HasSuffix(m, ext)
		}) {
			continue
		}
		if best == "" || compareVersions(filepath.Base(m), filepath.Base(best)) > 0 {
			best = m
		}
	}
	if best == "" {
		return "", fmt.Errorf("no kernel source in %s (install linux-source: scripts/install-kernel-deps.sh)", dir)
	}
	return best, nil
}

// packageVersion is the version of the Debian package that installed the
// tarball (linux-source-6.1.tar.xz comes from linux-source-6.1), or "".
func packageVersion(tarball string) string {
	name, _, _ := strings.Cut(filepath.Base(tarball), ".tar")
	out, err := exec.Command("dpkg-query", "-W", "-f=${Version}", name).Output()
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(out))
}

// FindKernel returns the tuned kernel that BuildKernel built from o's
// source and fragment. The error wraps ErrKernelNotBuilt when the cache
// does not have it.
func FindKernel(o KernelBuildOptions) (*Kernel, error) {
	o.defaults()
	in, err := o.inputs()
	if err != nil {
		return nil, err
	}
	k, err := loadKernel(entryDir(o.CacheDir, in.key()))
	if err != nil {
		return nil, &notFoundError{
			msg: fmt.Sprintf("no tuned kernel in %s for %s and this fragment (run 'hull image kernel' or 'make kernel')", o.CacheDir, sourceName(in)),
			err: ErrKernelNotBuilt,
		}
	}
	markUsed(k.Dir)
	return k, nil
}

func sourceName(in kernelInputs) string {
	if in.sourceVersion != "" {
		return filepath.Base(in.source) + " " + in.sourceVersion
	}
	return filepath.Base(in.source)
}

// loadKernel reads the cache entry in dir; an entry is complete once its
// kernel.json is there, which is written last.
func loadKernel(dir string) (*Kernel, error) {
	b, err := os.ReadFile(filepath.Join(dir, kernelManifest))
	if err != nil {
		return nil, err
	}
	k := &Kernel{}
	if err := json.Unmarshal(b, k); err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, kernelManifest), err)
	}
	k.Dir = dir
	k.BzImage = filepath.Join(dir, kernelBzImage)
	k.Vmlinux = filepath.Join(dir, kernelVmlinux)
	k.Config = filepath.Join(dir, kernelConfig)
	for _, p := range []string{k.BzImage, k.Vmlinux, k.Config} {
		if _, err := os.Stat(p); err != nil {
			return nil, err
		}
	}
	k.Cached = true
	return k, nil
}

// BuildKernel builds the tuned guest kernel from o.Source configured by
// tinyconfig plus o.Fragment, or returns the cached one built from the
// same source and fragment. It fails, naming them, when options of the
// fragment did not make it into the final configuration. A build takes
// 5 to 15 minutes on 2 CPUs; make runs at the lowest CPU priority.
func BuildKernel(ctx context.Context, o KernelBuildOptions) (*Kernel, error) {
	o.defaults()
	note := func(format string, args ...any) {
		if o.Progress != nil {
			fmt.Fprintf(o.Progress, format+"\n", args...)
		}
	}
	want, err := parseKconfig(strings.NewReader(string(o.Fragment)))
	if err != nil {
		return nil, fmt.Errorf("kernel config fragment: %w", err)
	}
	note("hashing %s...", o.sourceOrDefault())
	in, err := o.inputs()
	if err != nil {
		return nil, err
	}
	key := in.key()
	dir := entryDir(o.CacheDir, key)
	note("kernel source %s, key %s", sourceName(in), key[:16])

	if err := os.MkdirAll(o.CacheDir, 0o755); err != nil {
		return nil, fmt.Errorf("kernel cache: %w", err)
	}
	unlock, err := lockDir(ctx, o.CacheDir, note)
	if err != nil {
		return nil, err
	}
	defer unlock()
	if !o.Force {
		if k, err := loadKernel(dir); err == nil {
			note("tuned kernel %s is up to date in %s", k.Release, dir)
			o.prune(k, note)
			return k, nil
		}
	}

	b := &kernelBuild{
		o:    o,
		in:   in,
		note: note,
		// A fixed path, so that the same inputs compile in the same place.
		work: filepath.Join(o.CacheDir, "build-"+key[:16]),
		log:  filepath.Join(o.CacheDir, "build-"+key[:16]+".log"),
	}
	if err := os.RemoveAll(b.work); err != nil {
		return nil, fmt.Errorf("removing an old build: %w", err)
	}
	defer func() {
		// Over a gigabyte: seconds, which a ^C'd user would otherwise wait
		// out in silence.
		note("removing the build tree...")
		os.RemoveAll(b.work)
	}()
	k, err := b.run(ctx, want, key, dir)
	if err == nil || !b.keepLog {
		os.Remove(b.log)
	}
	if err == nil {
		o.prune(k, note)
	}
	return k, err
}

// prune marks k used and trims the cache to o.Keep kernels; what it
// cannot remove is reported, not an error of the build.
func (o *KernelBuildOptions) prune(k *Kernel, note func(string, ...any)) {
	markUsed(k.Dir)
	removed, err := pruneKernels(o.CacheDir, o.Keep, k.Dir)
	for _, r := range removed {
		note("removed an older cached kernel: %s (%s, fragment %.12s)", r.Dir, r.Release, r.Fragment)
	}
	if err != nil {
		note("pruning the kernel cache: %v", err)
	}
}

func (o *KernelBuildOptions) sourceOrDefault() string {
	if o.Source != "" {
		return o.Source
	}
	return "the kernel source"
}

// kernelBuild is one build in progress.
type kernelBuild struct {
	o    KernelBuildOptions
	in   kernelInputs
	note func(string, ...any)
	work string // the source tree
	log  string // kept when a step of the build fails
	logf *os.File
	// keepLog is set when an error points at the log.
	keepLog bool
}

func (b *kernelBuild) run(ctx context.Context, want kconfig, key, dir string) (*Kernel, error) {
	var err error
	if b.logf, err = os.Create(b.log); err != nil {
		return nil, fmt.Errorf("kernel build log: %w", err)
	}
	defer b.logf.Close()
	if err := os.MkdirAll(b.work, 0o755); err != nil {
		return nil, err
	}
	b.note("extracting %s...", b.in.source)
	if err := b.cmd(ctx, "tar", "-xf", b.in.source, "-C", b.work, "--strip-components=1", "--no-same-owner"); err != nil {
		return nil, b.failed("extracting the kernel source", err)
	}
	for _, p := range b.in.patches {
		b.note("applying %s...", p.Name)
		if err := b.patch(ctx, p); err != nil {
			return nil, err
		}
	}
	const fragment = "hull.config"
	if err := os.WriteFile(filepath.Join(b.work, fragment), b.o.Fragment, 0o644); err != nil {
		return nil, err
	}
	// tinyconfig, then allnoconfig over it plus the fragment: an option the
	// fragment does not ask for stays off, even one that only became
	// visible through the fragment (olddefconfig would take its default).
	b.note("configuring: tinyconfig + %s...", fragment)
	if err := b.cmd(ctx, "make", "tinyconfig"); err != nil {
		return nil, b.failed("make tinyconfig", err)
	}
	if err := os.Rename(filepath.Join(b.work, ".config"), filepath.Join(b.work, "tiny.config")); err != nil {
		return nil, err
	}
	if err := b.cmd(ctx, "scripts/kconfig/merge_config.sh", "-n", "tiny.config", fragment); err != nil {
		return nil, b.failed("merging the config fragment", err)
	}
	final, err := readKconfig(filepath.Join(b.work, ".config"))
	if err != nil {
		return nil, err
	}
	if bad := unmet(want, final); len(bad) > 0 {
		return nil, fmt.Errorf("kernel config: %d option(s) of the fragment did not make it into the final .config, "+
			"because options they depend on are off or missing in %s; enable those or drop these:\n  %s",
			len(bad), filepath.Base(b.in.source), strings.Join(bad, "\n  "))
	}
	b.note("all %d options of the fragment are in the final .config", len(want))

	start := time.Now()
	b.note("compiling with make -j%d at nice 19 (5-15 minutes on 2 CPUs)...", b.o.Jobs)
	if err := b.compile(ctx); err != nil {
		return nil, b.failed("compiling the kernel", err)
	}
	b.note("compiled in %s", time.Since(start).Round(time.Second))
	return b.install(key, dir)
}

// patch applies p to the source tree; a patch that does not apply exactly
// (no fuzz) fails the build with patch's own words.
func (b *kernelBuild) patch(ctx context.Context, p KernelPatch) error {
	file := filepath.Join(b.work, ".hull-"+p.Name)
	if err := os.WriteFile(file, p.Diff, 0o644); err != nil {
		return err
	}
	var out bytes.Buffer
	err := b.cmdTo(ctx, io.MultiWriter(b.logf, &out), "patch", "-p1", "--forward", "--batch", "--fuzz=0", "--no-backup-if-mismatch", "-i", file)
	switch {
	case errors.Is(err, exec.ErrNotFound):
		return fmt.Errorf("applying %s: patch(1) is not installed (scripts/install-kernel-deps.sh)", p.Name)
	case err != nil && ctx.Err() == nil:
		return fmt.Errorf("kernel patch %s does not apply to %s: %v: %s", p.Name, filepath.Base(b.in.source), err, strings.TrimSpace(out.String()))
	}
	return err
}

// compile runs make, and reports how far it got every ProgressEvery.
func (b *kernelBuild) compile(ctx context.Context) error {
	pr, pw := io.Pipe()
	done := make(chan struct{})
	go func() {
		defer close(done)
		b.progress(pr)
	}()
	err := b.cmdTo(ctx, io.MultiWriter(b.logf, pw), "nice", "-n", "19", "make", fmt.Sprintf("-j%d", b.o.Jobs), "bzImage")
	pw.Close()
	<-done
	return err
}

// progress reads kbuild's output ("  CC      fs/9p/vfs_inode.o") and
// reports the count of objects built and the last one.
func (b *kernelBuild) progress(r io.Reader) {
	start := time.Now()
	last := start
	var objects int
	var current string
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 2 && (f[0] == "CC" || f[0] == "AS") {
			objects++
			current = f[1]
		}
		if now := time.Now(); now.Sub(last) >= b.o.ProgressEvery {
			last = now
			b.note("  %s: %d objects compiled (%s)", now.Sub(start).Round(time.Second), objects, current)
		}
	}
	io.Copy(io.Discard, r)
}

// install copies the kernel, its vmlinux and its config into a new cache
// entry, replacing dir atomically: kernel.json goes in last.
func (b *kernelBuild) install(key, dir string) (*Kernel, error) {
	rel, err := os.ReadFile(filepath.Join(b.work, "include/config/kernel.release"))
	if err != nil {
		return nil, fmt.Errorf("kernel release: %w", err)
	}
	k := &Kernel{
		Release:       strings.TrimSpace(string(rel)),
		Key:           key,
		Source:        filepath.Base(b.in.source),
		SourceVersion: b.in.sourceVersion,
		SourceDigest:  hex.EncodeToString(b.in.sourceSum[:]),
		Fragment:      fmt.Sprintf("%x", sha256.Sum256(b.o.Fragment)),
		Patches:       patchNames(b.in.patches),
		Compiler:      compilerVersion(),
	}
	tmp, err := os.MkdirTemp(b.o.CacheDir, ".new-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	files := map[string]string{
		kernelBzImage: "arch/x86/boot/bzImage",
		kernelVmlinux: "vmlinux",
		kernelConfig:  ".config",
	}
	for name, src := range files {
		if err := copyFile(filepath.Join(b.work, src), filepath.Join(tmp, name)); err != nil {
			return nil, fmt.Errorf("installing the kernel: %w", err)
		}
	}
	err = writeFileAtomic(filepath.Join(tmp, kernelManifest), 0o644, func(w io.Writer) error {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "\t")
		return enc.Encode(k)
	})
	if err != nil {
		return nil, err
	}
	if err := os.Chmod(tmp, 0o755); err != nil {
		return nil, err
	}
	if err := os.RemoveAll(dir); err != nil {
		return nil, err
	}
	if err := os.Rename(tmp, dir); err != nil {
		return nil, err
	}
	if err := syncDir(b.o.CacheDir); err != nil {
		return nil, err
	}
	k, err = loadKernel(dir)
	if err != nil {
		return nil, err
	}
	k.Cached = false
	b.note("tuned kernel %s in %s", k.Release, dir)
	return k, nil
}

// failed says which step failed, with the end of the build log, which
// stays behind for the whole story.
func (b *kernelBuild) failed(step string, err error) error {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("kernel build: %s: %w", step, err)
	}
	b.keepLog = true
	b.logf.Sync()
	return fmt.Errorf("kernel build: %s: %w\n%s\n(whole log: %s)", step, err, lastLines(b.log, 15), b.log)
}

func (b *kernelBuild) cmd(ctx context.Context, name string, args ...string) error {
	return b.cmdTo(ctx, b.logf, name, args...)
}

// cmdTo runs a command of the build in the source tree, in a process group
// of its own that is killed as a whole when ctx ends, so that no compiler
// outlives a cancelled build.
func (b *kernelBuild) cmdTo(ctx context.Context, out io.Writer, name string, args ...string) error {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = b.work
	cmd.Env = append(os.Environ(), kbuildEnv...)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 10 * time.Second
	fmt.Fprintf(b.logf, "+ %s %s\n", name, strings.Join(args, " "))
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("kernel build interrupted: %w", ctx.Err())
		}
		return err
	}
	return nil
}

// lockDir takes an exclusive lock on dir/.lock for one build at a time,
// waiting (and saying so) while another holds it.
func lockDir(ctx context.Context, dir string, note func(string, ...any)) (func(), error) {
	f, err := os.OpenFile(filepath.Join(dir, ".lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("kernel cache lock: %w", err)
	}
	for waited := false; ; waited = true {
		err = unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			return func() { f.Close() }, nil
		}
		if !errors.Is(err, unix.EWOULDBLOCK) {
			f.Close()
			return nil, fmt.Errorf("kernel cache lock: %w", err)
		}
		if !waited {
			note("waiting for another kernel build in %s...", dir)
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

// compilerVersion is the first line of gcc --version, for the record.
func compilerVersion() string {
	out, err := exec.Command("gcc", "--version").Output()
	if err != nil {
		return ""
	}
	line, _, _ := strings.Cut(string(out), "\n")
	return line
}

// copyFile writes a copy of src to dst, atomically.
func copyFile(src, dst string) error {
	return writeFileAtomic(dst, 0o644, func(w io.Writer) error {
		f, err := os.Open(src)
		if err != nil {
			return err
		}
		defer f.Close()
		_, err = io.Copy(w, f)
		return err
	})
}

// lastLines returns up to n last lines of the file at path, indented.
func lastLines(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return "  " + strings.Join(lines, "\n  ")
}

func patchNames(ps []KernelPatch) []string {
	var names []string
	for _, p := range ps {
		names = append(names, p.Name)
	}
	return names
}
