package hypervisor

import (
	"os"
	"path/filepath"
	"strconv"

	"golang.org/x/sys/unix"
)

// Renice sets the nice value of every thread of process pid: Linux keeps
// one per thread, and setpriority on a pid reaches only its main thread.
func Renice(pid, nice int) error {
	tasks, err := filepath.Glob(filepath.Join("/proc", strconv.Itoa(pid), "task", "[0-9]*"))
	if err != nil {
		return err
	}
	if len(tasks) == 0 {
		return os.ErrNotExist
	}
	for _, t := range tasks {
		tid, _ := strconv.Atoi(filepath.Base(t))
		if err := unix.Setpriority(unix.PRIO_PROCESS, tid, nice); err != nil && err != unix.ESRCH {
			return err
		}
	}
	return nil
}
