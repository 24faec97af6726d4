package image

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"time"
)

// The kernel cache keeps one entry per set of inputs (kbuild.go), and each
// is ~25 MB: every change of the fragment, the patches or the source adds
// one. A build prunes the cache to its most recently used entries; an
// entry counts as used when it is built, or found for an image build
// (FindKernel stamps it). Images do not depend on the cache: they copy
// the kernel.

// DefaultKernelCacheKeep is how many kernels `hull image kernel` keeps.
const DefaultKernelCacheKeep = 2

// markUsed stamps dir's entry as just used. A cache the caller may not
// write to stays as it is: the stamp only orders pruning.
func markUsed(dir string) {
	now := time.Now()
	_ = os.Chtimes(dir, now, now)
}

// pruneKernels removes the entries of cacheDir beyond the keep most
// recently used ones, except current's, and returns the removed ones.
// keep < 1 keeps everything. Only complete entries count and go; the
// caller holds the cache's lock, so no other build is installing one.
func pruneKernels(cacheDir string, keep int, current string) ([]*Kernel, error) {
	if keep < 1 {
		return nil, nil
	}
	ents, err := os.ReadDir(cacheDir)
	if err != nil {
		return nil, err
	}
	type entry struct {
		k    *Kernel
		used time.Time
	}
	var all []entry
	for _, e := range ents {
		dir := filepath.Join(cacheDir, e.Name())
		if !e.IsDir() || dir == current {
			continue
		}
		k, err := loadKernel(dir)
		if err != nil {
			continue // not an entry: a build tree, or one being installed
		}
		st, err := os.Stat(dir)
		if err != nil {
			continue
		}
		all = append(all, entry{k, st.ModTime()})
	}
	slices.SortFunc(all, func(a, b entry) int { return b.used.Compare(a.used) })
	keep-- // current's place
	if len(all) <= keep {
		return nil, nil
	}
	var removed []*Kernel
	var errs []error
	for _, e := range all[keep:] {
		if err := os.RemoveAll(e.k.Dir); err != nil {
			errs = append(errs, fmt.Errorf("removing %s: %w", e.k.Dir, err))
			continue
		}
		removed = append(removed, e.k)
	}
	return removed, errors.Join(errs...)
}
