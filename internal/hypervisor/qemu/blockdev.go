package qemu

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/hullrt/hull/internal/hypervisor"
)

// portPrefix names the empty PCIe root ports a q35 VM gets at boot for
// hot-plug (Args): hotplug0, hotplug1, ...
const portPrefix = "hotplug"

// unplugPoll is how often DetachBlock looks whether the guest has let a
// disk go.
const unplugPoll = 10 * time.Millisecond

// ErrNoPort is returned when a q35 VM has no free hot-plug port left.
var ErrNoPort = errors.New("no free hot-plug port in the vm")

var serialRE = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)

// ValidSerial reports whether s can be a virtio-blk serial and a part of
// QEMU ids.
func ValidSerial(s string) bool {
	return len(s) <= hypervisor.MaxBlockSerial && serialRE.MatchString(s)
}

// blockIDs are the QEMU device id and block node name of the disk with
// serial: derived from it, so that a disk is found again from its serial
// alone, by another process too. Node names are at most 31 bytes.
func blockIDs(serial string) (device, node string) {
	return "blk-" + serial, "node-" + serial
}

// qomProperty is one entry of qom-list.
type qomProperty struct {
	Name string `json:"name"`
	Type string `json:"type"`
}

func (q *qmp) qomList(ctx context.Context, path string) ([]qomProperty, error) {
	raw, err := q.execute(ctx, "qom-list", map[string]any{"path": path})
	if err != nil {
		return nil, err
	}
	var props []qomProperty
	if err := unmarshal("qom-list", raw, &props); err != nil {
		return nil, err
	}
	return props, nil
}

// AttachBlock hot-plugs d into the running VM whose state directory is
// stateDir as a virtio-blk disk: on q35 into a free hot-plug root port,
// on pc onto the root bus (ACPI hot-plug). The host's page cache is
// bypassed: the guest's is the only cache of the disk, and what the
// guest flushes is on the device.
func AttachBlock(ctx context.Context, stateDir, machine string, d hypervisor.BlockDevice) error {
	if !ValidSerial(d.Serial) {
		return fmt.Errorf("invalid virtio-blk serial %q", d.Serial)
	}
	q, err := dialQMP(ctx, ControlSocket(stateDir))
	if err != nil {
		return err
	}
	defer q.close()
	if machine == Microvm {
		return fmt.Errorf("%w: a microvm cannot hot-plug disks (hypervisor.machine = \"microvm\")", ErrNoPort)
	}
	bus := "pci.0"
	if machine == "q35" {
		if bus, err = q.freePort(ctx); err != nil {
			return err
		}
	}
	device, node := blockIDs(d.Serial)
	blockdev := map[string]any{
		"node-name": node, "driver": "raw", "read-only": d.ReadOnly,
		"file": map[string]any{
			"driver": "host_device", "filename": d.Path,
			"cache": map[string]any{"direct": true},
		},
	}
	if _, err := q.execute(ctx, "blockdev-add", blockdev); err != nil {
		return fmt.Errorf("opening %s for the vm: %w", d.Path, err)
	}
	dev := map[string]any{"driver": "virtio-blk-pci", "id": device, "bus": bus, "drive": node, "serial": d.Serial}
	if _, err := q.execute(ctx, "device_add", dev); err != nil {
		_, _ = q.execute(ctx, "blockdev-del", map[string]any{"node-name": node})
		return fmt.Errorf("plugging %s into the vm: %w", d.Path, err)
	}
	return nil
}

// freePort is the first hot-plug root port with nothing plugged in. What
// is plugged is read from QEMU's device tree, never from the guest.
func (q *qmp) freePort(ctx context.Context) (string, error) {
	props, err := q.qomList(ctx, "/machine/peripheral")
	if err != nil {
		return "", err
	}
	var ports []string
	for _, p := range props {
		if p.Type == "child<pcie-root-port>" && strings.HasPrefix(p.Name, portPrefix) {
			ports = append(ports, p.Name)
		}
	}
	if len(ports) == 0 {
		return "", fmt.Errorf("%w: it has none (hypervisor.hotplug_ports = 0)", ErrNoPort)
	}
	sort.Slice(ports, func(i, j int) bool {
		return len(ports[i]) < len(ports[j]) || len(ports[i]) == len(ports[j]) && ports[i] < ports[j]
	})
	for _, port := range ports {
		// A root port's bus is its child of the same name; every device
		// on that bus is one of the bus's child[N] links.
		children, err := q.qomList(ctx, "/machine/peripheral/"+port+"/"+port)
		if err != nil {
			return "", err
		}
		busy := false
		for _, c := range children {
			busy = busy || strings.HasPrefix(c.Name, "child[")
		}
		if !busy {
			return port, nil
		}
	}
	return "", fmt.Errorf("%w: all %d are in use (hypervisor.hotplug_ports)", ErrNoPort, len(ports))
}

// DetachBlock unplugs the disk with serial from the running VM whose
// state directory is stateDir, waits until the guest has let it go, and
// closes the host device. The guest should have unmounted it first. A
// disk that is not there is not an error. When the guest does not let go
// before ctx ends, the device stays open until the VM exits.
func DetachBlock(ctx context.Context, stateDir, serial string) error {
	if !ValidSerial(serial) {
		return fmt.Errorf("invalid virtio-blk serial %q", serial)
	}
	q, err := dialQMP(ctx, ControlSocket(stateDir))
	if err != nil {
		return err
	}
	defer q.close()
	device, node := blockIDs(serial)
	present, err := q.hasDevice(ctx, device)
	if err != nil {
		return err
	}
	if present {
		if _, err := q.execute(ctx, "device_del", map[string]any{"id": device}); err != nil {
			return fmt.Errorf("unplugging disk %s: %w", serial, err)
		}
	}
	// The device leaves QEMU's tree once the guest ejected it, and lets go
	// of its block node a moment later.
	for present {
		select {
		case <-ctx.Done():
		case <-time.After(unplugPoll):
			present, err = q.hasDevice(ctx, device)
			if err == nil && !present {
				present, err = q.nodeAttached(ctx, node)
			}
		}
		if ctx.Err() != nil && (present || err != nil) {
			return fmt.Errorf("unplugging disk %s: the guest did not release it: %w", serial, ctx.Err())
		}
		if err != nil {
			return err
		}
	}
	open, err := q.hasNode(ctx, node)
	if err != nil || !open {
		return err
	}
	if _, err := q.execute(ctx, "blockdev-del", map[string]any{"node-name": node}); err != nil {
		return fmt.Errorf("closing disk %s: %w", serial, err)
	}
	return nil
}

// hasDevice reports whether the device with id is in the VM.
func (q *qmp) hasDevice(ctx context.Context, id string) (bool, error) {
	props, err := q.qomList(ctx, "/machine/peripheral")
	if err != nil {
		return false, err
	}
	for _, p := range props {
		if p.Name == id {
			return true, nil
		}
	}
	return false, nil
}

// nodeAttached reports whether a device still uses the block node called
// name.
func (q *qmp) nodeAttached(ctx context.Context, name string) (bool, error) {
	var backends []struct {
		Inserted *struct {
			NodeName string `json:"node-name"`
		} `json:"inserted"`
	}
	raw, err := q.execute(ctx, "query-block", nil)
	if err != nil {
		return false, err
	}
	if err := unmarshal("query-block", raw, &backends); err != nil {
		return false, err
	}
	for _, b := range backends {
		if b.Inserted != nil && b.Inserted.NodeName == name {
			return true, nil
		}
	}
	return false, nil
}

// hasNode reports whether the block node called name is open.
func (q *qmp) hasNode(ctx context.Context, name string) (bool, error) {
	var nodes []struct {
		NodeName string `json:"node-name"`
	}
	raw, err := q.execute(ctx, "query-named-block-nodes", map[string]any{"flat": true})
	if err != nil {
		return false, err
	}
	if err := unmarshal("query-named-block-nodes", raw, &nodes); err != nil {
		return false, err
	}
	for _, n := range nodes {
		if n.NodeName == name {
			return true, nil
		}
	}
	return false, nil
}

func unmarshal(cmd string, raw json.RawMessage, v any) error {
	if err := json.Unmarshal(raw, v); err != nil {
		return fmt.Errorf("qmp %s: decoding the answer: %w", cmd, err)
	}
	return nil
}
