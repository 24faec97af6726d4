package image

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
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
	noKernel := &notFoundError{
		msg: fmt.Sprintf("no kernel found in %s (install linux-image-cloud-amd64)", bootDir),
		err: ErrNoKernel,
	}
	ents, err := os.ReadDir(bootDir)
	if errors.Is(err, fs.ErrNotExist) {
		return "", "", noKernel
	}
	if err != nil {
		return "", "", fmt.Errorf("looking for a kernel: %w", err)
	}
	var newest, newestCloud string
	for _, e := range ents {
		v, ok := strings.CutPrefix(e.Name(), "vmlinuz-")
		if !ok || v == "" || e.IsDir() {
			continue
		}
		if newest == "" || compareVersions(v, newest) > 0 {
			newest = v
		}
		if strings.HasSuffix(v, "-cloud-amd64") && (newestCloud == "" || compareVersions(v, newestCloud) > 0) {
			newestCloud = v
		}
	}
	kver = newestCloud
	if kver == "" {
		kver = newest
	}
	if kver == "" {
		return "", "", noKernel
	}
	return kver, filepath.Join(bootDir, "vmlinuz-"+kver), nil
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
