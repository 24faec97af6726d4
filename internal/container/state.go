// Package container keeps the host's record of each container created
// through the CLI: a state file under the runtime root, guarded by a file
// lock against concurrent CLI calls, and the liveness of the host process
// that stands for the container (its monitor).
package container

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/hullrt/hull/internal/oci"
)

// Status is a container's OCI status.
type Status string

const (
	Creating Status = "creating"
	Created  Status = "created"
	Running  Status = "running"
	Paused   Status = "paused"
	Stopped  Status = "stopped"
)

// ErrNotExist is returned for an id with no container.
var ErrNotExist = errors.New("container does not exist")

// ErrExist is returned when creating an id that is taken.
var ErrExist = errors.New("container with given ID already exists")

// State is what the host knows of a container. It is written by the CLI
// and the monitor, under the container's lock.
type State struct {
	ID      string    `json:"id"`
	Bundle  string    `json:"bundle"`
	Rootfs  string    `json:"rootfs"`
	Created time.Time `json:"created"`
	Status  Status    `json:"status"`
	// Pid is the monitor's pid: the process that stands for the container
	// on the host. PidStart is its start time (clock ticks after boot), so
	// that a recycled pid is not mistaken for it.
	Pid      int    `json:"pid"`
	PidStart uint64 `json:"pid_start"`
	// ExitStatus is valid once Status is Stopped.
	ExitStatus int         `json:"exit_status"`
	Spec       *specs.Spec `json:"spec"`
}

// Root is the directory holding every container's state (runc's --root).
type Root string

// Dir is the state directory of container id.
func (r Root) Dir(id string) string { return filepath.Join(string(r), DirName(id)) }

// SandboxDir is where the container's VM keeps its sockets and logs.
func (r Root) SandboxDir(id string) string { return filepath.Join(r.Dir(id), "vm") }

// Socket is the monitor's socket: each connection is a stream to the agent.
func (r Root) Socket(id string) string { return filepath.Join(r.Dir(id), "monitor.sock") }

func (r Root) stateFile(id string) string { return filepath.Join(r.Dir(id), stateFile) }

const stateFile = "state.json"

// maxDirName is the longest id a state directory is named after as it is.
const maxDirName = 32

// DirName names container id's state directory. Longer ids (podman's,
// docker's and containerd's are 64 hex digits) are shortened to a prefix
// and a digest, so that the unix sockets below it, the monitor's and the
// VM's, stay within the 107 bytes of a socket path. '~' is not allowed in
// ids: a shortened name is never another container's.
func DirName(id string) string {
	if len(id) <= maxDirName {
		return id
	}
	sum := sha256.Sum256([]byte(id))
	return id[:12] + "~" + hex.EncodeToString(sum[:8])
}

// Handle is a locked container record. Close releases the lock.
type Handle struct {
	State
	root Root
	lock *os.File
}

// Create makes the record of a new container and returns it locked.
func (r Root) Create(st State) (*Handle, error) {
	if err := oci.ValidateID(st.ID); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(string(r), 0o711); err != nil {
		return nil, fmt.Errorf("creating state root: %w", err)
	}
	if err := os.Mkdir(r.Dir(st.ID), 0o700); err != nil {
		if errors.Is(err, os.ErrExist) {
			return nil, ErrExist
		}
		return nil, fmt.Errorf("creating state dir: %w", err)
	}
	h, err := r.lock(st.ID)
	if err != nil {
		os.RemoveAll(r.Dir(st.ID))
		return nil, err
	}
	h.State = st
	if err := h.Save(); err != nil {
		h.Close()
		os.RemoveAll(r.Dir(st.ID))
		return nil, err
	}
	return h, nil
}

// Open locks and loads the record of container id, waiting for the lock.
func (r Root) Open(id string) (*Handle, error) {
	if err := oci.ValidateID(id); err != nil {
		return nil, err
	}
	h, err := r.lock(id)
	if err != nil {
		return nil, err
	}
	if err := h.load(); err != nil {
		h.Close()
		return nil, err
	}
	return h, nil
}

// Load reads the record of container id without locking it.
func (r Root) Load(id string) (*State, error) {
	if err := oci.ValidateID(id); err != nil {
		return nil, err
	}
	h := &Handle{root: r}
	h.ID = id
	if err := h.load(); err != nil {
		return nil, err
	}
	return &h.State, nil
}

func (r Root) lock(id string) (*Handle, error) {
	f, err := os.OpenFile(filepath.Join(r.Dir(id), "lock"), os.O_RDWR|os.O_CREATE, 0o600)
	if errors.Is(err, os.ErrNotExist) {
		return nil, ErrNotExist
	} else if err != nil {
		return nil, err
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("locking container %s: %w", id, err)
	}
	h := &Handle{root: r, lock: f}
	h.ID = id
	return h, nil
}

func (h *Handle) load() error {
	st, err := h.root.read(DirName(h.ID))
	if err != nil {
		return err
	}
	if st.ID != h.ID {
		return fmt.Errorf("state of %s names container %q", h.ID, st.ID)
	}
	h.State = *st
	return nil
}

// read reads the record in the state directory name.
func (r Root) read(name string) (*State, error) {
	b, err := os.ReadFile(filepath.Join(string(r), name, stateFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, ErrNotExist
	} else if err != nil {
		return nil, err
	}
	var st State
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("reading state in %s: %w", name, err)
	}
	return &st, nil
}

// Save writes the record atomically.
func (h *Handle) Save() error {
	b, err := json.Marshal(&h.State)
	if err != nil {
		return err
	}
	tmp := h.root.stateFile(h.ID) + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, h.root.stateFile(h.ID))
}

// Close releases the lock.
func (h *Handle) Close() error {
	if h.lock == nil {
		return nil
	}
	err := h.lock.Close()
	h.lock = nil
	return err
}

// Remove deletes the container's state directory; the handle is closed.
func (h *Handle) Remove() error {
	err := os.RemoveAll(h.root.Dir(h.ID))
	h.Close()
	return err
}

// Refresh corrects the recorded status with the facts: a container whose
// monitor is gone has stopped, whatever was recorded.
func (s *State) Refresh() {
	if s.Status == Stopped {
		return
	}
	if !s.MonitorAlive() {
		s.Status = Stopped
		if s.ExitStatus == 0 {
			s.ExitStatus = 255
		}
	}
}

// MonitorAlive reports whether the recorded monitor process still runs.
func (s *State) MonitorAlive() bool {
	if s.Pid <= 0 {
		return false
	}
	start, err := ProcessStartTime(s.Pid)
	return err == nil && start == s.PidStart
}

// ProcessStartTime is the start time of pid in clock ticks after boot
// (field 22 of /proc/PID/stat).
func ProcessStartTime(pid int) (uint64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, fmt.Errorf("malformed /proc/%d/stat", pid)
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 20 {
		return 0, fmt.Errorf("malformed /proc/%d/stat", pid)
	}
	// f[0] is field 3 (state); starttime is field 22.
	if f[0] == "Z" {
		return 0, fmt.Errorf("process %d is a zombie", pid)
	}
	return strconv.ParseUint(f[19], 10, 64)
}

// List returns the state of every container under r, sorted by id.
func (r Root) List() ([]State, error) {
	entries, err := os.ReadDir(string(r))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	} else if err != nil {
		return nil, err
	}
	var out []State
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		st, err := r.read(e.Name())
		if err != nil || DirName(st.ID) != e.Name() {
			continue // being created or deleted, or not a record
		}
		st.Refresh()
		out = append(out, *st)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

// OCIState is the state as `hull state` prints it: the OCI runtime-spec
// state, with runc's extra fields (rootfs, created, owner).
type OCIState struct {
	specs.State
	Rootfs  string    `json:"rootfs"`
	Created time.Time `json:"created"`
	Owner   string    `json:"owner"`
}

// OCI returns the state in the runtime-spec's form.
func (s *State) OCI() OCIState {
	st := OCIState{
		State: specs.State{
			Version: specs.Version,
			ID:      s.ID,
			Status:  specs.ContainerState(s.Status),
			Bundle:  s.Bundle,
		},
		Rootfs:  s.Rootfs,
		Created: s.Created,
	}
	if s.Status != Stopped {
		st.Pid = s.Pid
	}
	if s.Spec != nil {
		st.Annotations = s.Spec.Annotations
	}
	return st
}
