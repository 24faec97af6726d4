package image

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// kconfig is a kernel configuration as .config and fragments write it:
// option name (without CONFIG_) to value ("y", "m", "256", `"-hull"`), with
// "n" for "# CONFIG_X is not set".
type kconfig map[string]string

// parseKconfig reads a .config or a fragment. Comments other than "is not
// set" lines are ignored; a later line for the same option wins, as in
// merge_config.sh.
func parseKconfig(r io.Reader) (kconfig, error) {
	c := make(kconfig)
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if name, ok := strings.CutPrefix(line, "# CONFIG_"); ok {
			if name, ok := strings.CutSuffix(name, " is not set"); ok {
				c[name] = "n"
			}
			continue
		}
		if line == "" || line[0] == '#' {
			continue
		}
		name, value, ok := strings.Cut(line, "=")
		name, isConfig := strings.CutPrefix(name, "CONFIG_")
		if !ok || !isConfig || name == "" || value == "" {
			return nil, fmt.Errorf("line %d: not a kernel config line: %q", n, line)
		}
		c[name] = value
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return c, nil
}

func readKconfig(path string) (kconfig, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	c, err := parseKconfig(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}

// value is the option's value, "n" when it is off or absent.
func (c kconfig) value(name string) string {
	if v, ok := c[name]; ok {
		return v
	}
	return "n"
}

// unmet lists, sorted, the options of want that final does not have as
// asked: "CONFIG_X=y (final: not set)". Kconfig drops an option silently
// when its dependencies are off, so this is how a fragment is checked.
func unmet(want, final kconfig) []string {
	var bad []string
	for name, v := range want {
		got := final.value(name)
		if got == v {
			continue
		}
		bad = append(bad, fmt.Sprintf("%s (final: %s)", configLine(name, v), configLine(name, got)))
	}
	slices.Sort(bad)
	return bad
}

func configLine(name, value string) string {
	if value == "n" {
		return "# CONFIG_" + name + " is not set"
	}
	return "CONFIG_" + name + "=" + value
}

// moduleOptions maps the modules the image builder asks for (DefaultModules,
// the shared filesystems') to the options that build them into a kernel, so
// that the modules of a kernel without a modules directory are known from
// its configuration.
var moduleOptions = map[string]string{
	"virtio_pci":                 "VIRTIO_PCI",
	"virtio_mmio":                "VIRTIO_MMIO",
	"virtio_console":             "VIRTIO_CONSOLE",
	"virtio_blk":                 "VIRTIO_BLK",
	"virtio_net":                 "VIRTIO_NET",
	"virtiofs":                   "VIRTIO_FS",
	"fuse":                       "FUSE_FS",
	"overlay":                    "OVERLAY_FS",
	"ext4":                       "EXT4_FS",
	"xfs":                        "XFS_FS",
	"9p":                         "9P_FS",
	"9pnet":                      "NET_9P",
	"9pnet_virtio":               "NET_9P_VIRTIO",
	"vsock":                      "VSOCKETS",
	"vmw_vsock_virtio_transport": "VIRTIO_VSOCKETS",
	"virtio_balloon":             "VIRTIO_BALLOON",
}

// builtinTable is the module table of a kernel configured by c that is
// booted without its modules: only what c builds in (=y) is there.
func builtinTable(c kconfig) *moduleTable {
	t := &moduleTable{byName: map[string]*module{}, byPath: map[string]*module{}, builtin: map[string]bool{}}
	for mod, opt := range moduleOptions {
		if c.value(opt) == "y" {
			t.builtin[mod] = true
		}
	}
	return t
}

// kernelConfigNames are the files, beside a kernel image, that hold its
// configuration: what `hull image kernel` writes, and a build tree's.
var kernelConfigNames = []string{"config", ".config"}

// kernelFileConfig reads the configuration of the kernel image at path from
// a file beside it.
func kernelFileConfig(path string) (kconfig, string, error) {
	dir := filepath.Dir(path)
	for _, name := range kernelConfigNames {
		p := filepath.Join(dir, name)
		c, err := readKconfig(p)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		return c, p, err
	}
	return nil, "", fmt.Errorf("kernel %s: no configuration beside it (%s): the image builder reads it to know what the kernel has built in",
		path, strings.Join(kernelConfigNames, " or "))
}

// kernelRelease returns the release (what uname -r prints) of the kernel
// image at path: from the setup header of a bzImage, or from the banner of
// an uncompressed vmlinux.
func kernelRelease(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	// The x86 boot protocol: "HdrS" at 0x202; at 0x20e, the offset less
	// 0x200 of a NUL-terminated "<release> (<user>@<host>) #..." string.
	if len(b) > 0x210 && string(b[0x202:0x206]) == "HdrS" {
		if off := int(binary.LittleEndian.Uint16(b[0x20e:])) + 0x200; off > 0x200 && off < len(b) {
			s := b[off:]
			if i := bytes.IndexByte(s, 0); i >= 0 {
				s = s[:i]
			}
			if r, _, _ := strings.Cut(string(s), " "); validRelease(r) {
				return r, nil
			}
		}
	}
	const banner = "Linux version "
	for rest := b; ; {
		i := bytes.Index(rest, []byte(banner))
		if i < 0 {
			break
		}
		rest = rest[i+len(banner):]
		end := bytes.IndexAny(rest, " \x00")
		if end > 0 && validRelease(string(rest[:end])) {
			return string(rest[:end]), nil
		}
	}
	return "", fmt.Errorf("kernel %s: no kernel release found (neither a bzImage nor a vmlinux?)", path)
}

// validRelease accepts what a kernel release looks like, and nothing that
// could escape a path it is joined to.
func validRelease(r string) bool {
	if r == "" || len(r) > 64 || r[0] < '0' || r[0] > '9' {
		return false
	}
	return !strings.ContainsFunc(r, func(c rune) bool {
		return c <= ' ' || c > '~' || c == '/' || c == '\\'
	})
}

// kernelFileTable returns the release of the kernel image at path and the
// module table its configuration gives: what it builds in.
func kernelFileTable(path string) (string, *moduleTable, error) {
	kver, err := kernelRelease(path)
	if err != nil {
		return "", nil, err
	}
	c, _, err := kernelFileConfig(path)
	if err != nil {
		return "", nil, err
	}
	return kver, builtinTable(c), nil
}
