package ctr

import (
	"fmt"
	"os"
	"os/exec"
	"testing"
)

// TestMain runs the tests on a host with a hybrid cgroup layout (v1 at
// /sys/fs/cgroup, v2 at /sys/fs/cgroup/unified) in a mount namespace of
// their own where /sys/fs/cgroup is the v2 hierarchy, as in the guest.
func TestMain(m *testing.M) {
	if os.Getuid() == 0 && os.Getenv("HULL_CTR_TEST_NS") == "" {
		if _, err := os.Stat("/sys/fs/cgroup/cgroup.controllers"); err != nil {
			if _, err := os.Stat("/sys/fs/cgroup/unified/cgroup.controllers"); err == nil {
				os.Exit(reexecWithUnifiedCgroup())
			}
		}
	}
	os.Exit(m.Run())
}

func reexecWithUnifiedCgroup() int {
	args := append([]string{"-m", "--propagation", "private", "sh", "-c",
		`mount --bind /sys/fs/cgroup/unified /sys/fs/cgroup && exec "$@"`, "sh"}, os.Args...)
	cmd := exec.Command("unshare", args...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.Env = append(os.Environ(), "HULL_CTR_TEST_NS=1")
	if err := cmd.Run(); err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			return ee.ExitCode()
		}
		fmt.Fprintln(os.Stderr, "re-executing in a mount namespace:", err)
		return 1
	}
	return 0
}
