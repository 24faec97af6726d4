package image

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// formatVersion is bumped whenever Build would write a different image from
// the same inputs, so that images cached by an older builder are rebuilt.
const formatVersion = 1

// File names in the output directory.
const (
	kernelFile   = "vmlinuz"
	initrdFile   = "initrd.img"
	manifestFile = "manifest.json"
)

// manifest is OutputDir/manifest.json. It is written last, after the files
// it names are complete, and removed first when they are replaced.
type manifest struct {
	KernelVersion string   `json:"kernelVersion"`
	Digest        string   `json:"digest"`
	Modules       []string `json:"modules"`
	Kernel        string   `json:"kernel"` // file name in the output directory
	Initrd        string   `json:"initrd"` // file name in the output directory
	// SharedFS is Image.SharedFS. Images from builders that did not write
	// it get it from Modules, which misses filesystems built into the
	// kernel.
	SharedFS []string `json:"sharedFS,omitempty"`
}

// Load returns the image that Build last wrote to outputDir. The error
// wraps fs.ErrNotExist when no complete image is there.
func Load(outputDir string) (*Image, error) {
	b, err := os.ReadFile(filepath.Join(outputDir, manifestFile))
	if err != nil {
		return nil, fmt.Errorf("loading image: %w", err)
	}
	var m manifest
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("loading image: %s: %w", manifestFile, err)
	}
	if !filepath.IsLocal(m.Kernel) || !filepath.IsLocal(m.Initrd) {
		return nil, fmt.Errorf("loading image: %s names files outside %s", manifestFile, outputDir)
	}
	img := &Image{
		Kernel:        filepath.Join(outputDir, m.Kernel),
		Initrd:        filepath.Join(outputDir, m.Initrd),
		KernelVersion: m.KernelVersion,
		Digest:        m.Digest,
		Modules:       m.Modules,
		SharedFS:      m.SharedFS,
		Cached:        true,
	}
	if img.SharedFS == nil {
		img.SharedFS = mountable(func(mod string) bool { return slices.Contains(m.Modules, mod) })
	}
	for _, p := range []string{img.Kernel, img.Initrd} {
		if _, err := os.Stat(p); err != nil {
			return nil, fmt.Errorf("loading image: %w", err)
		}
	}
	return img, nil
}

// digestInput is what an image is built from.
type digestInput struct {
	kver      string
	kernelSum [sha256.Size]byte
	agentSum  [sha256.Size]byte
	modules   []*module
	data      [][]byte // contents of modules[i]
}

// digest identifies an image by its inputs: equal digests mean equal
// images. Module paths are hashed sorted and then in load order, since the
// order is part of the image too.
func (in digestInput) digest() string {
	type sum struct{ path, sha string }
	sums := make([]sum, len(in.modules))
	for i, m := range in.modules {
		s := sha256.Sum256(in.data[i])
		sums[i] = sum{m.path, hex.EncodeToString(s[:])}
	}
	h := sha256.New()
	fmt.Fprintf(h, "hull-image %d\nkernel-version %s\nkernel %x\nagent %x\n",
		formatVersion, in.kver, in.kernelSum, in.agentSum)
	for _, s := range sums {
		fmt.Fprintf(h, "load %s\n", s.path)
	}
	slices.SortFunc(sums, func(a, b sum) int { return strings.Compare(a.path, b.path) })
	for _, s := range sums {
		fmt.Fprintf(h, "module %s %s\n", s.path, s.sha)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// hashFile returns the SHA-256 of the file at path.
func hashFile(path string) ([sha256.Size]byte, error) {
	var sum [sha256.Size]byte
	f, err := os.Open(path)
	if err != nil {
		return sum, err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return sum, err
	}
	h.Sum(sum[:0])
	return sum, nil
}

// writeFileAtomic writes the file at path through a temporary file in the
// same directory and a rename, so that path holds either its old contents
// or the complete new ones, even across a crash.
func writeFileAtomic(path string, perm fs.FileMode, write func(io.Writer) error) (err error) {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	bw := bufio.NewWriterSize(f, 1<<20)
	if err := write(bw); err != nil {
		return err
	}
	if err := bw.Flush(); err != nil {
		return err
	}
	if err := f.Chmod(perm); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}

// syncDir makes the renames done in dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
