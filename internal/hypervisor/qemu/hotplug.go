package qemu

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"

	"github.com/hullrt/hull/internal/hypervisor"
)

// memorySlots is how many DIMMs can be hot-plugged into a VM over its life.
const memorySlots = 16

// MemoryBlockMiB is the unit of memory hot-plug: the guest onlines memory
// in blocks of this size on x86, so DIMMs are whole blocks.
const MemoryBlockMiB = 128

// ControlSocket is the VM's second QMP monitor. The first belongs to the
// process that started QEMU; this one serves short-lived clients, such as
// `hull update` growing the VM, one at a time, which is what serialises
// concurrent resizes.
func ControlSocket(stateDir string) string { return filepath.Join(stateDir, "qmp-ctl.sock") }

type hotpluggableCPU struct {
	Type    string         `json:"type"`
	Props   map[string]any `json:"props"`
	QOMPath string         `json:"qom-path"`
}

type memorySummary struct {
	Base    int64 `json:"base-memory"`
	Plugged int64 `json:"plugged-memory"`
}

// Grow hot-plugs vCPUs and memory into the running VM whose state directory
// is stateDir until it has at least want (memory in whole blocks); it never
// shrinks the VM. It returns the VM's size afterwards.
func Grow(ctx context.Context, stateDir string, want hypervisor.Size) (hypervisor.Size, error) {
	q, err := dialQMP(ctx, ControlSocket(stateDir))
	if err != nil {
		return hypervisor.Size{}, err
	}
	defer q.close()
	var got hypervisor.Size
	if got.VCPUs, err = q.growCPUs(ctx, want.VCPUs); err != nil {
		return got, err
	}
	if got.MemoryMiB, err = q.growMemory(ctx, want.MemoryMiB); err != nil {
		return got, err
	}
	return got, nil
}

// growCPUs plugs vCPUs into free slots until want are present; asking for
// more than the VM's maxcpus is an error.
func (q *qmp) growCPUs(ctx context.Context, want int) (int, error) {
	var slots []hotpluggableCPU
	if err := q.query(ctx, "query-hotpluggable-cpus", &slots); err != nil {
		return 0, err
	}
	present := 0
	for _, s := range slots {
		if s.QOMPath != "" {
			present++
		}
	}
	if want > len(slots) {
		return present, fmt.Errorf("%d vcpus wanted, the vm can have at most %d (hypervisor.max_vcpus)", want, len(slots))
	}
	// QEMU lists the free slots from the highest; plug the lowest first.
	for i := len(slots) - 1; i >= 0 && present < want; i-- {
		s := slots[i]
		if s.QOMPath != "" {
			continue
		}
		args := map[string]any{"driver": s.Type, "id": fmt.Sprintf("hcpu%d", present)}
		for k, v := range s.Props {
			args[k] = v
		}
		if _, err := q.execute(ctx, "device_add", args); err != nil {
			return present, fmt.Errorf("plugging vcpu %d: %w", present, err)
		}
		present++
	}
	return present, nil
}

// memoryMiB is the guest's memory: its boot RAM and the DIMMs plugged.
func (q *qmp) memoryMiB(ctx context.Context) (int, error) {
	var sum memorySummary
	if err := q.query(ctx, "query-memory-size-summary", &sum); err != nil {
		return 0, err
	}
	return int((sum.Base + sum.Plugged) >> 20), nil
}

// growMemory plugs one DIMM, of whole blocks, big enough to reach want MiB.
func (q *qmp) growMemory(ctx context.Context, want int) (int, error) {
	have, err := q.memoryMiB(ctx)
	if err != nil {
		return 0, err
	}
	if want <= have {
		return have, nil
	}
	var devices []json.RawMessage
	if err := q.query(ctx, "query-memory-devices", &devices); err != nil {
		return have, err
	}
	if len(devices) >= memorySlots {
		return have, fmt.Errorf("cannot grow the vm to %d MiB: all %d memory slots are used", want, memorySlots)
	}
	add := (want - have + MemoryBlockMiB - 1) / MemoryBlockMiB * MemoryBlockMiB
	id := len(devices)
	// Shared, like the boot memory, so that vhost-user daemons (virtiofsd)
	// can map it.
	backend := map[string]any{
		"qom-type": "memory-backend-memfd", "id": fmt.Sprintf("hmem%d", id),
		"size": int64(add) << 20, "share": true,
	}
	if _, err := q.execute(ctx, "object-add", backend); err != nil {
		return have, fmt.Errorf("adding %d MiB of memory: %w", add, err)
	}
	dimm := map[string]any{"driver": "pc-dimm", "id": fmt.Sprintf("hdimm%d", id), "memdev": backend["id"]}
	if _, err := q.execute(ctx, "device_add", dimm); err != nil {
		_, _ = q.execute(ctx, "object-del", map[string]any{"id": backend["id"]})
		return have, fmt.Errorf("plugging %d MiB of memory: %w", add, err)
	}
	return have + add, nil
}

// query runs a QMP command without arguments and decodes its result.
func (q *qmp) query(ctx context.Context, cmd string, v any) error {
	raw, err := q.execute(ctx, cmd, nil)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(raw, v); err != nil {
		return fmt.Errorf("qmp %s: decoding the answer: %w", cmd, err)
	}
	return nil
}

// Fits checks that a VM that cannot grow (a microvm) already has the size
// want asks for, and returns the size it has.
func Fits(ctx context.Context, stateDir string, want hypervisor.Size) (hypervisor.Size, error) {
	q, err := dialQMP(ctx, ControlSocket(stateDir))
	if err != nil {
		return hypervisor.Size{}, err
	}
	defer q.close()
	var cpus []json.RawMessage
	if err := q.query(ctx, "query-cpus-fast", &cpus); err != nil {
		return hypervisor.Size{}, err
	}
	mem, err := q.memoryMiB(ctx)
	if err != nil {
		return hypervisor.Size{}, err
	}
	have := hypervisor.Size{VCPUs: len(cpus), MemoryMiB: mem}
	if want.VCPUs > have.VCPUs || want.MemoryMiB > have.MemoryMiB {
		return have, fmt.Errorf("the vm has %d vcpus and %d MiB and cannot grow to %d and %d MiB: a microvm has no hot-plug (hypervisor.machine = \"microvm\")", have.VCPUs, have.MemoryMiB, want.VCPUs, want.MemoryMiB)
	}
	return have, nil
}
