package bench

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/sirupsen/logrus"

	"github.com/hullrt/hull/internal/container"
	"github.com/hullrt/hull/internal/storage"
)

// scratchPrefix starts the name of every benchmark's scratch directory
// in the temporary directory.
const scratchPrefix = "hull-bench-"

// ownerFile, in a scratch directory, names the benchmark process that
// made it: its pid and start time, so that a reused pid is not taken for
// it.
const ownerFile = "owner"

// Scratch makes a scratch directory for a benchmark named kind ("start",
// "net"...) and returns it with the function that unmounts what is left
// mounted under it (runsc --network=none leaves a null-netns bind mount
// in its state root) and removes it.
//
// It first removes the scratch directories of benchmarks that died
// without removing theirs (kill -9): a benchmark's own clean-up cannot
// run then, the next one's can.
func Scratch(kind string) (string, func(), error) {
	sweepScratch(os.TempDir())
	dir, err := os.MkdirTemp("", scratchPrefix+kind+"-")
	if err != nil {
		return "", nil, fmt.Errorf("creating bench directory: %w", err)
	}
	remove := func() {
		if err := storage.RemoveMounted(dir, "scratch dir"); err != nil {
			logrus.WithError(err).Warn("bench")
		}
	}
	start, err := container.ProcessStartTime(os.Getpid())
	if err == nil {
		err = os.WriteFile(filepath.Join(dir, ownerFile), fmt.Appendf(nil, "%d %d\n", os.Getpid(), start), 0o600)
	}
	if err != nil {
		remove()
		return "", nil, fmt.Errorf("recording the bench directory's owner: %w", err)
	}
	return dir, remove, nil
}

// sweepScratch removes the scratch directories under tmp whose benchmark
// has gone. A directory with no owner file, or one that another user
// made, is left alone: it is not known to be stale.
func sweepScratch(tmp string) {
	dirs, _ := filepath.Glob(filepath.Join(tmp, scratchPrefix+"*"))
	for _, dir := range dirs {
		if !staleScratch(dir) {
			continue
		}
		if err := storage.RemoveMounted(dir, "stale bench scratch dir"); err != nil {
			logrus.WithError(err).Warnf("bench: %s was left by a benchmark that died", dir)
			continue
		}
		logrus.Debugf("bench: removed %s, left by a benchmark that died", dir)
	}
}

// staleScratch reports whether dir is a scratch directory of ours whose
// benchmark no longer runs.
func staleScratch(dir string) bool {
	fi, err := os.Lstat(dir)
	if err != nil || !fi.IsDir() {
		return false
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok || int(st.Uid) != os.Geteuid() {
		return false
	}
	b, err := os.ReadFile(filepath.Join(dir, ownerFile))
	if err != nil {
		return false
	}
	pid, start, err := parseOwner(string(b))
	if err != nil {
		return false
	}
	now, err := container.ProcessStartTime(pid)
	return err != nil || now != start
}

// parseOwner reads an owner file: "PID STARTTIME".
func parseOwner(s string) (pid int, start uint64, err error) {
	f := strings.Fields(s)
	if len(f) != 2 {
		return 0, 0, errors.New("malformed owner file")
	}
	if pid, err = strconv.Atoi(f[0]); err != nil || pid <= 0 {
		return 0, 0, errors.New("malformed owner pid")
	}
	if start, err = strconv.ParseUint(f[1], 10, 64); err != nil {
		return 0, 0, errors.New("malformed owner start time")
	}
	return pid, start, nil
}
