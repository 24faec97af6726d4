package image

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// findKernel returns the version and path of the kernel to boot: version
// when it is set, otherwise the newest cloud kernel in bootDir, otherwise
// the newest kernel of any flavour.
func findKernel(bootDir, version string) (kver, path string, err error) {
	if version != "" {
		if strings.ContainsRune(version, '/') || version == "." || version == ".." {
			return "", "", fmt.Errorf("invalid kernel version %q", version)
		}
		path = filepath.Join(bootDir, "vmlinuz-"+version)
		if _, err := os.Stat(path); err != nil {
			return "", "", fmt.Errorf("kernel %s: %w", version, err)
		}
		return version, path, nil
	}
	kvers, err := installedKernels(bootDir)
	if err != nil {
		return "", "", err
	}
	return kvers[0], filepath.Join(bootDir, "vmlinuz-"+kvers[0]), nil
}

// installedKernels lists the versions of the kernels in bootDir, best
// first: cloud kernels before the others, newest first among each. The
// error wraps ErrNoKernel when there is none.
func installedKernels(bootDir string) ([]string, error) {
	noKernel := &notFoundError{
		msg: fmt.Sprintf("no kernel found in %s (install linux-image-cloud-amd64)", bootDir),
		err: ErrNoKernel,
	}
	ents, err := os.ReadDir(bootDir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, noKernel
	}
	if err != nil {
		return nil, fmt.Errorf("looking for a kernel: %w", err)
	}
	var kvers []string
	for _, e := range ents {
		v, ok := strings.CutPrefix(e.Name(), "vmlinuz-")
		if ok && v != "" && !e.IsDir() {
			kvers = append(kvers, v)
		}
	}
	if len(kvers) == 0 {
		return nil, noKernel
	}
	isCloud := func(v string) bool { return strings.HasSuffix(v, "-cloud-amd64") }
	slices.SortFunc(kvers, func(a, b string) int {
		if isCloud(a) != isCloud(b) {
			if isCloud(a) {
				return -1
			}
			return 1
		}
		return compareVersions(b, a)
	})
	return kvers, nil
}

// kernelFor returns the best installed kernel whose modules let a guest
// mount its share with s.
func kernelFor(bootDir, modulesDir string, s sharedFS) (kver, path string, err error) {
	kvers, err := installedKernels(bootDir)
	if err != nil {
		return "", "", err
	}
	for _, v := range kvers {
		t, err := readModuleTable(filepath.Join(modulesDir, v))
		if err != nil {
			continue
		}
		if !slices.ContainsFunc(s.modules, func(m string) bool { return !t.has(m) }) {
			return v, filepath.Join(bootDir, "vmlinuz-"+v), nil
		}
	}
	return "", "", &notFoundError{
		msg: fmt.Sprintf("no kernel in %s has %s, which %s needs (install %s)", bootDir, s.fs, s.kind, s.pkg),
		err: ErrNoKernel,
	}
}

// compareVersions orders kernel versions the way people read them: runs of
// digits compare as numbers, so 6.1.0-10 is newer than 6.1.0-9.
func compareVersions(a, b string) int {
	for a != "" && b != "" {
		var ra, rb string
		ra, a = nextRun(a)
		rb, b = nextRun(b)
		if c := compareRuns(ra, rb); c != 0 {
			return c
		}
	}
	return len(a) - len(b)
}

// nextRun splits s after its leading run of digits or of non-digits.
func nextRun(s string) (run, rest string) {
	digit := isDigit(s[0])
	i := 1
	for i < len(s) && isDigit(s[i]) == digit {
		i++
	}
	return s[:i], s[i:]
}

func compareRuns(a, b string) int {
	if isDigit(a[0]) && isDigit(b[0]) {
		a = strings.TrimLeft(a, "0")
		b = strings.TrimLeft(b, "0")
		if len(a) != len(b) {
			return len(a) - len(b)
		}
	}
	return strings.Compare(a, b)
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }
