package guest

import (
	"errors"
	"path"
	"strconv"
	"strings"
	"time"

	securejoin "github.com/cyphar/filepath-securejoin"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"
)

// prefetchMax bounds how much of an entrypoint is read ahead: enough for
// the whole of a shell or a small static binary, not a large program's
// every page.
const prefetchMax = 8 << 20

// defaultPath is where the container's executable is looked for when its
// environment has no PATH (hull-init looks it up likewise).
const defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// prefetchEntrypoint asks the kernel to read the container's executable
// into the page cache while hull-init creates the container, so that
// the exec at StartContainer finds its pages there instead of reading
// them through the shared filesystem then: the share keeps a file's pages
// across opens (docs/design/004-shared-rootfs.md). The reads are
// asynchronous (FADV_WILLNEED); failing to find or open the file only
// means no prefetch.
//
// The rootfs is the container's, so nothing in it is trusted: the path is
// resolved inside it (securejoin), opened O_PATH without following a last
// symlink, and reopened for reading only if it is a regular file, so that
// no device or FIFO is ever opened.
//
// It returns at once: the search of the rootfs and the request run on a
// goroutine of their own, with copies of what they need from spec.
func prefetchEntrypoint(spec *specs.Spec) {
	if spec.Process == nil || len(spec.Process.Args) == 0 || spec.Root == nil {
		return
	}
	root, candidates := spec.Root.Path, entrypointCandidates(spec.Process)
	go func() {
		t := time.Now()
		for _, p := range candidates {
			if n, err := prefetch(root, p); err == nil {
				logrus.Debugf("prefetching %d bytes of %s (%s)", n, p, time.Since(t))
				return
			}
		}
	}()
}

// entrypointCandidates lists where, inside the rootfs, the executable of p
// may be: its first argument itself when it names a path (relative to the
// working directory), or that name in each directory of its PATH.
func entrypointCandidates(p *specs.Process) []string {
	name := p.Args[0]
	if name == "" {
		return nil
	}
	if strings.Contains(name, "/") {
		return []string{path.Join("/", p.Cwd, name)}
	}
	dirs := defaultPath
	for _, e := range p.Env {
		if v, ok := strings.CutPrefix(e, "PATH="); ok {
			dirs = v
		}
	}
	var out []string
	for _, d := range strings.Split(dirs, ":") {
		if path.IsAbs(d) {
			out = append(out, path.Join(d, name))
		}
	}
	return out
}

var errNotRegular = errors.New("not a regular file")

// prefetch starts reading the regular file at p inside root into the page
// cache and returns how many bytes it asked for.
func prefetch(root, p string) (int64, error) {
	full, err := securejoin.SecureJoin(root, p)
	if err != nil {
		return 0, err
	}
	pfd, err := unix.Open(full, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return 0, err
	}
	defer unix.Close(pfd)
	var st unix.Stat_t
	if err := unix.Fstat(pfd, &st); err != nil {
		return 0, err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return 0, errNotRegular
	}
	// The same inode, opened for reading: the path may have changed since.
	fd, err := unix.Open("/proc/self/fd/"+strconv.Itoa(pfd), unix.O_RDONLY|unix.O_CLOEXEC|unix.O_NOCTTY, 0)
	if err != nil {
		return 0, err
	}
	defer unix.Close(fd)
	n := min(st.Size, prefetchMax)
	return n, unix.Fadvise(fd, 0, n, unix.FADV_WILLNEED)
}
