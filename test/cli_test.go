package test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/runc/libcontainer/utils"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/santhosh-tekuri/jsonschema/v5"

	"github.com/hullrt/hull/internal/busybox"
)

// stateSchema compiles the runtime-spec's state schema from the module
// the build uses.
func stateSchema(t *testing.T) *jsonschema.Schema {
	t.Helper()
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "github.com/opencontainers/runtime-spec").Output()
	if err != nil {
		t.Fatalf("locating runtime-spec module: %v", err)
	}
	path := filepath.Join(strings.TrimSpace(string(out)), "schema", "state-schema.json")
	s, err := jsonschema.Compile(path)
	if err != nil {
		t.Fatalf("compiling %s: %v", path, err)
	}
	return s
}

// ociState runs `hull state` and checks its output against the schema.
func ociState(t *testing.T, h *hullCmd, schema *jsonschema.Schema, id string) specs.State {
	t.Helper()
	r := h.run(t, nil, "state", id)
	if r.code != 0 {
		t.Fatalf("state %s: exit %d: %s", id, r.code, r.stderr)
	}
	var doc any
	if err := json.Unmarshal([]byte(r.stdout), &doc); err != nil {
		t.Fatalf("state is not JSON: %v: %s", err, r.stdout)
	}
	if err := schema.Validate(doc); err != nil {
		t.Fatalf("state does not match the OCI state schema: %v\n%s", err, r.stdout)
	}
	var st specs.State
	if err := json.Unmarshal([]byte(r.stdout), &st); err != nil {
		t.Fatal(err)
	}
	return st
}

// waitPidExit waits for a process that is not our child to exit.
func waitPidExit(t *testing.T, pid int, timeout time.Duration) {
	t.Helper()
	for deadline := time.Now().Add(timeout); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil || strings.Contains(string(b), ") Z ") {
			return
		}
	}
	t.Fatalf("process %d still running after %v", pid, timeout)
}

// The lifecycle as containerd's runc shim drives it.
func TestCLILifecycle(t *testing.T) {
	e := requireEnv(t)
	t.Parallel()
	schema := stateSchema(t)
	h := newHull(t, e, "")
	b := makeBundle(t, []string{"sh", "-c", "echo started; trap 'echo bye; exit 42' TERM; while :; do sleep 0.1; done"}, nil)
	pidFile := filepath.Join(t.TempDir(), "pid")
	out, err := os.Create(filepath.Join(t.TempDir(), "stdout"))
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()

	cmd := h.command(context.Background(), "create", "--bundle", b, "--pid-file", pidFile, "life")
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Run(); err != nil {
		t.Fatalf("create: %v: %s", err, readFile(t, out.Name()))
	}
	st := ociState(t, h, schema, "life")
	pidb, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	pid, _ := strconv.Atoi(string(pidb))
	if st.Status != "created" || st.Pid != pid || pid <= 0 || st.Bundle != b {
		t.Fatalf("after create: state %+v, pid file %q", st, pidb)
	}
	if r := h.run(t, nil, "start", "life"); r.code != 0 {
		t.Fatalf("start: %s", r.stderr)
	}
	if st := ociState(t, h, schema, "life"); st.Status != "running" {
		t.Fatalf("after start: %+v", st)
	}
	if r := h.run(t, nil, "start", "life"); r.code == 0 || !strings.Contains(r.stderr, "running") {
		t.Errorf("second start: exit %d %q", r.code, r.stderr)
	}

	r := h.run(t, nil, "exec", "life", "sh", "-c", "echo in-exec; exit 5")
	if r.code != 5 || r.stdout != "in-exec\n" {
		t.Errorf("exec: exit %d stdout %q stderr %q", r.code, r.stdout, r.stderr)
	}
	proc := specs.Process{Args: []string{"sh", "-c", "id -u; pwd"}, Cwd: "/tmp", Env: []string{"PATH=/bin"}, User: specs.User{UID: 1000, GID: 1000}}
	pf := filepath.Join(t.TempDir(), "process.json")
	pb, _ := json.Marshal(proc)
	if err := os.WriteFile(pf, pb, 0o644); err != nil {
		t.Fatal(err)
	}
	if r := h.run(t, nil, "exec", "--process", pf, "life"); r.code != 0 || r.stdout != "1000\n/tmp\n" {
		t.Errorf("exec --process: exit %d stdout %q stderr %q", r.code, r.stdout, r.stderr)
	}

	r = h.run(t, nil, "ps", "--format", "json", "life")
	var pids []int
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &pids) != nil || len(pids) == 0 {
		t.Errorf("ps: exit %d %q %q", r.code, r.stdout, r.stderr)
	}
	r = h.run(t, nil, "list", "--format", "json")
	var list []map[string]any
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &list) != nil || len(list) != 1 || list[0]["id"] != "life" {
		t.Errorf("list: exit %d %q", r.code, r.stdout)
	}

	if r := h.run(t, nil, "pause", "life"); r.code != 0 {
		t.Fatalf("pause: %s", r.stderr)
	}
	if r := h.run(t, nil, "state", "life"); !strings.Contains(r.stdout, `"paused"`) {
		t.Errorf("state after pause: %s", r.stdout)
	}
	if r := h.run(t, nil, "resume", "life"); r.code != 0 {
		t.Fatalf("resume: %s", r.stderr)
	}
	if r := h.run(t, nil, "update", "--memory", "64m", "--pids-limit", "30", "life"); r.code != 0 {
		t.Fatalf("update: %s", r.stderr)
	}
	r = h.run(t, nil, "events", "--stats", "life")
	var ev struct {
		Type string
		Data struct {
			Memory struct{ Usage struct{ Limit uint64 } }
			Pids   struct{ Limit uint64 }
		}
	}
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &ev) != nil || ev.Type != "stats" || ev.Data.Memory.Usage.Limit != 64<<20 || ev.Data.Pids.Limit != 30 {
		t.Errorf("events --stats after update: exit %d %q", r.code, r.stdout)
	}

	if r := h.run(t, nil, "kill", "life", "TERM"); r.code != 0 {
		t.Fatalf("kill: %s", r.stderr)
	}
	waitPidExit(t, pid, time.Minute)
	if st := ociState(t, h, schema, "life"); st.Status != "stopped" {
		t.Fatalf("after the process exited: %+v", st)
	}
	if r := h.run(t, nil, "kill", "life", "TERM"); r.code == 0 {
		t.Error("kill of a stopped container succeeded")
	}
	if r := h.run(t, nil, "delete", "life"); r.code != 0 {
		t.Fatalf("delete: %s", r.stderr)
	}
	if r := h.run(t, nil, "state", "life"); r.code == 0 || !strings.Contains(r.stderr, "does not exist") {
		t.Errorf("state after delete: exit %d %q", r.code, r.stderr)
	}
	if r := h.run(t, nil, "delete", "--force", "life"); r.code != 0 {
		t.Errorf("second delete --force: %s", r.stderr)
	}
	got, _ := os.ReadFile(out.Name())
	if string(got) != "started\nbye\n" {
		t.Errorf("container stdout %q", got)
	}
}

// --console-socket receives the pty master, as containerd and podman expect.
func TestCLIConsoleSocket(t *testing.T) {
	e := requireEnv(t)
	t.Parallel()
	h := newHull(t, e, "")
	b := makeBundle(t, []string{"sh", "-c", "stty size; read line; echo got:$line; exit 3"}, func(s *specs.Spec) {
		s.Process.Terminal = true
	})
	sock := filepath.Join(t.TempDir(), "console.sock")
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	masters := make(chan *os.File, 1)
	go func() {
		c, err := l.AcceptUnix()
		if err != nil {
			return
		}
		defer c.Close()
		f, _ := c.File()
		defer f.Close()
		m, err := utils.RecvFile(f)
		if err == nil {
			masters <- m
		}
	}()
	pidFile := filepath.Join(t.TempDir(), "pid")
	if r := h.run(t, nil, "create", "--bundle", b, "--console-socket", sock, "--pid-file", pidFile, "tty"); r.code != 0 {
		t.Fatalf("create: %s", r.stderr)
	}
	var master *os.File
	select {
	case master = <-masters:
	case <-time.After(10 * time.Second):
		t.Fatal("no pty master on the console socket")
	}
	defer master.Close()
	if err := setWinsize(master, 33, 111); err != nil {
		t.Fatal(err)
	}
	if r := h.run(t, nil, "start", "tty"); r.code != 0 {
		t.Fatalf("start: %s", r.stderr)
	}
	if _, err := master.Write([]byte("hello\n")); err != nil {
		t.Fatal(err)
	}
	var screen bytes.Buffer
	buf := make([]byte, 4096)
	deadline := time.Now().Add(time.Minute)
	for !strings.Contains(screen.String(), "got:hello") && time.Now().Before(deadline) {
		_ = master.SetReadDeadline(time.Now().Add(time.Second))
		n, _ := master.Read(buf)
		screen.Write(buf[:n])
	}
	if !strings.Contains(screen.String(), "33 111") || !strings.Contains(screen.String(), "got:hello") {
		t.Fatalf("terminal output %q: want the window size and the echoed line", screen.String())
	}
	pid, _ := strconv.Atoi(readFile(t, pidFile))
	waitPidExit(t, pid, time.Minute)
	if r := h.run(t, nil, "delete", "tty"); r.code != 0 {
		t.Fatalf("delete: %s", r.stderr)
	}
}

func readFile(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// Bad input to every command: non-zero exit, runc's kind of message, and
// the running container is untouched.
func TestCLIErrors(t *testing.T) {
	e := requireEnv(t)
	t.Parallel()
	h := newHull(t, e, "")
	b := makeBundle(t, []string{"sleep", "1000"}, nil)
	if r := h.run(t, nil, "run", "--detach", "--bundle", b, "victim"); r.code != 0 {
		t.Fatalf("run -d: %s", r.stderr)
	}
	badProcess := filepath.Join(t.TempDir(), "bad.json")
	if err := os.WriteFile(badProcess, []byte(`{"args": `), 0o644); err != nil {
		t.Fatal(err)
	}
	emptyArgs := filepath.Join(t.TempDir(), "empty.json")
	if err := os.WriteFile(emptyArgs, []byte(`{"args": [], "cwd": "/"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"state", "nope"}, "does not exist"},
		{[]string{"start", "nope"}, "does not exist"},
		{[]string{"kill", "nope"}, "does not exist"},
		{[]string{"delete", "nope"}, "does not exist"},
		{[]string{"exec", "nope", "true"}, "does not exist"},
		{[]string{"ps", "nope"}, "does not exist"},
		{[]string{"pause", "nope"}, "does not exist"},
		{[]string{"resume", "nope"}, "does not exist"},
		{[]string{"update", "--memory", "1g", "nope"}, "does not exist"},
		{[]string{"events", "--stats", "nope"}, "does not exist"},
		{[]string{"state", "../escape"}, "invalid container id"},
		{[]string{"kill", "victim", "SIGNOPE"}, `unknown signal "SIGNOPE"`},
		{[]string{"kill", "victim", "99"}, `unknown signal "99"`},
		{[]string{"exec", "--process", badProcess, "victim"}, "parsing process file"},
		{[]string{"exec", "--process", emptyArgs, "victim"}, "args must not be empty"},
		{[]string{"exec", "--process", "/no/such/file", "victim"}, "no such file"},
		{[]string{"start", "victim"}, "cannot start a container that is running"},
		{[]string{"resume", "victim"}, "container not paused"},
		{[]string{"delete", "victim"}, "cannot delete container victim that is not stopped: running"},
		{[]string{"update", "--memory", "lots", "victim"}, "invalid value for --memory"},
		{[]string{"create", "--bundle", b, "victim"}, "already exists"},
	}
	for _, c := range cases {
		r := h.run(t, nil, c.args...)
		msg := strings.TrimSpace(r.stderr)
		if r.code == 0 || strings.Contains(msg, "\n") || !strings.Contains(msg, c.want) {
			t.Errorf("hull %s: exit %d, stderr %q; want one line with %q", strings.Join(c.args, " "), r.code, r.stderr, c.want)
		}
	}
	// Nothing changed: the container still runs and answers.
	if r := h.run(t, nil, "exec", "victim", "true"); r.code != 0 {
		t.Errorf("victim no longer runs: %s", r.stderr)
	}
	if r := h.run(t, nil, "delete", "--force", "victim"); r.code != 0 {
		t.Fatalf("delete --force: %s", r.stderr)
	}
}

// Many containers created and deleted at once leave nothing behind.
func TestCLIConcurrentCreateDelete(t *testing.T) {
	e := requireEnv(t)
	const n = 20
	// 20 guests boot at once on a small machine: give them time.
	h := newHull(t, e, "[hypervisor]\nboot_timeout = \"600s\"\nmemory_mib = 256\n")
	b := makeBundle(t, []string{"sleep", "1000"}, busybox.WithoutPIDNamespace)
	var wg sync.WaitGroup
	errs := make(chan string, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(id string) {
			defer wg.Done()
			if r := h.run(t, nil, "create", "--bundle", b, id); r.code != 0 {
				errs <- fmt.Sprintf("create %s: %s", id, r.stderr)
				return
			}
			if r := h.run(t, nil, "delete", "--force", id); r.code != 0 {
				errs <- fmt.Sprintf("delete %s: %s", id, r.stderr)
			}
		}(fmt.Sprintf("many-%02d", i))
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
}
