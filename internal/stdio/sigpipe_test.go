package stdio

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

func TestMain(m *testing.M) {
	if os.Getenv("HULL_TEST_BROKEN_STDOUT") == "1" {
		brokenStdoutHelper()
	}
	os.Exit(m.Run())
}

// brokenStdoutHelper is TestCatchSIGPIPE's child, whose stdout is a pipe
// whose reader has gone.
func brokenStdoutHelper() {
	CatchSIGPIPE()
	_, err := os.Stdout.Write([]byte("nobody reads this\n"))
	if !errors.Is(err, syscall.EPIPE) {
		fmt.Fprintf(os.Stderr, "write to a broken stdout: %v, want EPIPE\n", err)
		os.Exit(3)
	}
	// A child must not inherit SIGPIPE as ignored.
	out, err := exec.Command("/bin/sh", "-c", "grep SigIgn /proc/self/status").Output()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(4)
	}
	mask, err := strconv.ParseUint(strings.TrimSpace(strings.TrimPrefix(string(out), "SigIgn:")), 16, 64)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(4)
	}
	if mask&(1<<(uint(syscall.SIGPIPE)-1)) != 0 {
		fmt.Fprintf(os.Stderr, "a child has SIGPIPE ignored (SigIgn %x)\n", mask)
		os.Exit(5)
	}
	os.Exit(0)
}

func TestCatchSIGPIPE(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	r.Close()
	defer w.Close()
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), "HULL_TEST_BROKEN_STDOUT=1")
	cmd.Stdout = w
	var stderr strings.Builder
	cmd.Stderr = &stderr
	err = cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			t.Fatalf("the helper was killed by %v writing to a broken stdout", ws.Signal())
		}
	}
	if err != nil {
		t.Fatalf("helper: %v: %s", err, stderr.String())
	}
}
