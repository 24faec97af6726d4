package qemu

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"time"
)

// A template's RAM is a file clones map, so the migration stream carries
// only the device state: x-ignore-shared leaves out the RAM blocks that
// live in a shared file, on both sides.
var ignoreShared = map[string]any{
	"capabilities": []map[string]any{{"capability": "x-ignore-shared", "state": true}},
}

// migrationFD is the name the state file's descriptor gets in QEMU.
const migrationFD = "hull-template"

// HangUpAgent calls hangUp, which closes the host's end of the agent
// channel, and waits for the guest to open the agent's virtio-serial port
// again, which the agent does once its host has hung up, to wait for the
// next one. A template saved before that would have every clone's agent
// read the end of the template's session first. (QEMU reports the guest's
// opens of the port, not its closes.)
func (q *QEMU) HangUpAgent(ctx context.Context, hangUp func()) error {
	if q.qmp == nil {
		return errors.New("no qmp connection")
	}
	// A command first: its answer comes after, and so drops, the events
	// of the agent's earlier opens.
	if _, err := q.qmp.execute(ctx, "query-status", nil); err != nil {
		return err
	}
	hangUp()
	return q.qmp.waitEvent(ctx, "VSERPORT_CHANGE", func(data json.RawMessage) bool {
		var d struct {
			ID   string `json:"id"`
			Open bool   `json:"open"`
		}
		return json.Unmarshal(data, &d) == nil && d.ID == agentPort && d.Open
	})
}

// SaveTemplate stops the VM and writes its device state to the template's
// State file; its RAM is in the template's RAM file already. The VM stays
// stopped: the caller stops QEMU next.
func (q *QEMU) SaveTemplate(ctx context.Context) error {
	t := q.vm.Template
	if t == nil || t.Clone {
		return errors.New("the vm was not booted as a template")
	}
	if q.qmp == nil {
		return errors.New("no qmp connection")
	}
	f, err := os.OpenFile(t.State, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	defer f.Close()
	if _, err := q.qmp.execute(ctx, "stop", nil); err != nil {
		return err
	}
	if err := q.migrateFD(ctx, "migrate", f); err != nil {
		return err
	}
	var st struct {
		Status    string `json:"status"`
		ErrorDesc string `json:"error-desc"`
	}
	err = q.pollUntil(ctx, "query-migrate", &st, func() (bool, error) {
		switch st.Status {
		case "completed":
			return true, nil
		case "failed", "cancelled":
			return true, fmt.Errorf("migration %s: %s", st.Status, st.ErrorDesc)
		}
		return false, nil
	})
	if err != nil {
		return fmt.Errorf("saving the template: %w", err)
	}
	return f.Sync()
}

// restore loads a clone's device state from the template and runs it.
// QEMU was started with -incoming defer: it waits for this.
func (q *QEMU) restore(ctx context.Context) error {
	f, err := os.Open(q.vm.Template.State)
	if err != nil {
		return fmt.Errorf("opening the template: %w", err)
	}
	defer f.Close()
	if err := q.migrateFD(ctx, "migrate-incoming", f); err != nil {
		return err
	}
	// The template was saved stopped, so the clone stops after loading:
	// "paused" says the state is in.
	var st struct {
		Status string `json:"status"`
	}
	err = q.pollUntil(ctx, "query-status", &st, func() (bool, error) {
		switch st.Status {
		case "inmigrate":
			return false, nil
		case "paused", "postmigrate", "running":
			return true, nil
		}
		return true, fmt.Errorf("vm is %s: %s", st.Status, q.lastLog())
	})
	if err != nil {
		return fmt.Errorf("loading the template: %w", err)
	}
	if st.Status == "running" {
		return nil
	}
	_, err = q.qmp.execute(ctx, "cont", nil)
	return err
}

// migrateFD starts cmd ("migrate" or "migrate-incoming") on f, with the
// template's RAM left out of the stream.
func (q *QEMU) migrateFD(ctx context.Context, cmd string, f *os.File) error {
	if _, err := q.qmp.execute(ctx, "migrate-set-capabilities", ignoreShared); err != nil {
		return err
	}
	if err := q.qmp.sendFD(ctx, migrationFD, f); err != nil {
		return err
	}
	_, err := q.qmp.execute(ctx, cmd, map[string]any{"uri": "fd:" + migrationFD})
	return err
}

// pollUntil runs the QMP query cmd every 2 ms, decoding its answer into v,
// until final says that answer is the last (or fails), or ctx ends.
func (q *QEMU) pollUntil(ctx context.Context, cmd string, v any, final func() (bool, error)) error {
	for {
		raw, err := q.qmp.execute(ctx, cmd, nil)
		if err != nil {
			return err
		}
		if err := json.Unmarshal(raw, v); err != nil {
			return fmt.Errorf("decoding %s: %w", cmd, err)
		}
		if done, err := final(); done || err != nil {
			return err
		}
		if err := sleep(ctx, 2*time.Millisecond); err != nil {
			return err
		}
	}
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
