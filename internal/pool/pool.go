// Package pool keeps VMs booted ahead of need, so that creating a sandbox
// claims one instead of booting one. A keeper process (`hull pool`) boots
// empty VMs up to the agent answering and serves claims on a unix socket;
// a claim hands the VM's state directory and process ids over to the
// claimer, which adopts them, and the keeper boots a replacement.
package pool

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"time"
)

// VM is a booted, empty VM handed from the keeper to a claimer.
type VM struct {
	// Dir is the VM's state directory, on the same file system as the
	// claimer's, which renames it into place.
	Dir          string `json:"dir"`
	QEMUPid      int    `json:"qemu_pid"`
	VirtiofsdPid int    `json:"virtiofsd_pid,omitempty"`
	VCPUs        int    `json:"vcpus"`
	MemoryMiB    int    `json:"memory_mib"`
}

// ErrEmpty means the keeper has no ready VM of the kind asked for.
var ErrEmpty = errors.New("no ready vm in the pool")

// ErrNoPool means no keeper serves the socket.
var ErrNoPool = errors.New("no vm pool")

// Socket is where the keeper of the runtime root root listens.
func Socket(root string) string { return filepath.Join(root, "pool.sock") }

type request struct {
	// Key names the VM configuration the claimer wants (see
	// sandbox.PoolKey): a VM booted otherwise does not fit it.
	Key string `json:"key"`
}

type response struct {
	VM    *VM    `json:"vm,omitempty"`
	Empty bool   `json:"empty,omitempty"`
	Error string `json:"error,omitempty"`
}

// Claim takes a ready VM of configuration key from the keeper at socket.
// From its return the VM is the caller's to adopt or destroy.
func Claim(ctx context.Context, socket, key string) (*VM, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", socket)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrNoPool, err)
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	} else {
		_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	}
	if err := json.NewEncoder(conn).Encode(request{Key: key}); err != nil {
		return nil, fmt.Errorf("claiming a vm: %w", err)
	}
	var r response
	if err := json.NewDecoder(bufio.NewReader(conn)).Decode(&r); err != nil {
		return nil, fmt.Errorf("claiming a vm: %w", err)
	}
	switch {
	case r.Error != "":
		return nil, fmt.Errorf("claiming a vm: %s", r.Error)
	case r.Empty:
		return nil, ErrEmpty
	case r.VM == nil || !filepath.IsAbs(r.VM.Dir) || r.VM.QEMUPid <= 0:
		return nil, errors.New("claiming a vm: the pool's answer names no vm")
	}
	return r.VM, nil
}
