// Package storage gets container filesystems into the guest: a per-sandbox
// shared directory on the host into which root filesystems are bind
// mounted, exported to the guest by virtio-fs or virtio-9p.
package storage

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// GuestSharedDir is where the agent mounts the shared directory.
const GuestSharedDir = "/run/hull/shared"

// Tag names the shared directory on the virtio-fs/9p device.
const Tag = "hullfs"

// Share is the host directory shared with one sandbox's guest.
type Share struct {
	Dir string
}

// NewShare creates the shared directory.
func NewShare(dir string) (*Share, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("creating shared dir: %w", err)
	}
	return &Share{Dir: dir}, nil
}

// BindRootfs makes rootfs visible in the share as <cid>/rootfs and returns
// the path under which the guest sees it.
func (s *Share) BindRootfs(cid, rootfs string) (string, error) {
	fi, err := os.Stat(rootfs)
	if err != nil {
		return "", fmt.Errorf("rootfs: %w", err)
	}
	if !fi.IsDir() {
		return "", fmt.Errorf("rootfs %s is not a directory", rootfs)
	}
	if err := s.bind(rootfs, filepath.Join(s.Dir, cid, "rootfs")); err != nil {
		return "", fmt.Errorf("sharing rootfs: %w", err)
	}
	return filepath.Join(GuestSharedDir, cid, "rootfs"), nil
}

// BindMounts makes the host sources of the bind mounts among mounts
// visible in the share, as <cid>/mounts/<index>-<name>, and returns mounts
// with those sources replaced by the paths the guest sees. Relative sources
// are relative to bundleDir, as the runtime spec says. Other mounts (proc,
// tmpfs...) are made by the guest and pass unchanged. Remove undoes the
// bind mounts with the rest of the share.
func (s *Share) BindMounts(cid, bundleDir string, mounts []specs.Mount) ([]specs.Mount, error) {
	out := append([]specs.Mount(nil), mounts...)
	for i, m := range out {
		if !isBind(m) {
			continue
		}
		src := m.Source
		if !filepath.IsAbs(src) {
			src = filepath.Join(bundleDir, src)
		}
		name := filepath.Join(cid, "mounts", strconv.Itoa(i)+"-"+filepath.Base(src))
		if err := s.bind(src, filepath.Join(s.Dir, name)); err != nil {
			return nil, fmt.Errorf("sharing bind mount source for %s: %w", m.Destination, err)
		}
		out[i].Source = filepath.Join(GuestSharedDir, name)
	}
	return out, nil
}

// bind mounts src, a file or a directory, on target, which it creates.
func (s *Share) bind(src, target string) error {
	fi, err := os.Stat(src)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
		return err
	}
	if fi.IsDir() {
		err = os.Mkdir(target, 0o755)
	} else {
		err = os.WriteFile(target, nil, 0o644)
	}
	if err != nil {
		return err
	}
	if err := unix.Mount(src, target, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("bind mounting %s: %w", src, err)
	}
	// Private, as the rootfs: nothing mounted beneath travels back.
	return unix.Mount("", target, "", unix.MS_PRIVATE|unix.MS_REC, "")
}

// isBind reports whether m binds a host path rather than making a new
// filesystem.
func isBind(m specs.Mount) bool {
	if m.Type == "bind" {
		return true
	}
	for _, o := range m.Options {
		if o == "bind" || o == "rbind" {
			return true
		}
	}
	return false
}

// Remove unmounts everything below the share, found in the mount table
// rather than remembered, so that it also cleans up after a crashed
// runtime, and then deletes the directory. Removing a missing share is not
// an error.
func (s *Share) Remove() error {
	return RemoveMounted(s.Dir, "shared dir")
}

// RemoveMounted unmounts what is mounted at or below dir, deepest first,
// and then deletes dir; what names dir in errors. A missing dir is not an
// error.
func RemoveMounted(dir, what string) error {
	mounts, err := MountsUnder(dir)
	if err != nil {
		return err
	}
	var errs []error
	for _, m := range mounts {
		if err := unix.Unmount(m, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("unmounting %s: %w", m, err))
		}
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("removing %s: %w", what, err)
	}
	return nil
}

// MountsUnder lists the mount points at or below dir, deepest first.
func MountsUnder(dir string) ([]string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return parseMountsUnder(bufio.NewScanner(f), dir)
}

func parseMountsUnder(s *bufio.Scanner, dir string) ([]string, error) {
	dir = filepath.Clean(dir)
	var out []string
	for s.Scan() {
		fields := strings.Fields(s.Text())
		if len(fields) < 5 {
			continue
		}
		mp := unescapeMountPath(fields[4])
		if mp == dir || strings.HasPrefix(mp, dir+"/") {
			out = append(out, mp)
		}
	}
	// Deepest first, so nested mounts go before their parents.
	sort.SliceStable(out, func(i, j int) bool { return len(out[i]) > len(out[j]) })
	return out, s.Err()
}

// unescapeMountPath undoes mountinfo's octal escapes (\040 for space...).
func unescapeMountPath(p string) string {
	if !strings.Contains(p, `\`) {
		return p
	}
	var b strings.Builder
	for i := 0; i < len(p); i++ {
		if p[i] == '\\' && i+3 < len(p) {
			var v byte
			ok := true
			for _, c := range []byte(p[i+1 : i+4]) {
				if c < '0' || c > '7' {
					ok = false
					break
				}
				v = v*8 + (c - '0')
			}
			if ok {
				b.WriteByte(v)
				i += 3
				continue
			}
		}
		b.WriteByte(p[i])
	}
	return b.String()
}
