package qemu

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hullrt/hull/internal/hypervisor"
)

func TestArgsHotplugPorts(t *testing.T) {
	ports := func(machine string, n int) []string {
		vm := baseVM()
		vm.HotplugPorts = n
		var out []string
		for _, d := range argValues(New("", machine, vm).Args(), "-device") {
			if strings.HasPrefix(d, "pcie-root-port") {
				out = append(out, d)
			}
		}
		return out
	}
	got := ports("q35", 3)
	want := []string{
		"pcie-root-port,id=hotplug0,bus=pcie.0,chassis=1",
		"pcie-root-port,id=hotplug1,bus=pcie.0,chassis=2",
		"pcie-root-port,id=hotplug2,bus=pcie.0,chassis=3",
	}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("q35 with 3 ports: %q", got)
	}
	if got := ports("q35", 0); len(got) != 0 {
		t.Errorf("q35 with 0 ports: %q", got)
	}
	// pc's root bus takes hot-plug itself.
	if got := ports("pc", 2); len(got) != 0 {
		t.Errorf("pc: %q", got)
	}
}

func TestValidSerial(t *testing.T) {
	for s, ok := range map[string]bool{
		"hull0123456789abcdef": true, "a": true, "A_b-9": true,
		"": false, "hull0123456789abcdef0": false, "a b": false, "a,b": false,
		"a/b": false, "a\x00": false, "é": false,
	} {
		if ValidSerial(s) != ok {
			t.Errorf("ValidSerial(%q) = %v", s, !ok)
		}
	}
}

// fakeVM plays a QEMU with hot-plug ports behind a QMP socket: it keeps
// which devices and block nodes exist, and lets a device_del take a few
// polls, as a guest that ejects the disk does.
type fakeVM struct {
	mu      sync.Mutex
	ports   int
	devices map[string]string // id -> bus
	nodes   map[string]bool
	// unplugPolls is how many qom-list answers still show a deleted device.
	unplugPolls int
	deleting    string
	// releasing is a node that a removed device lets go of only after a
	// query-block, as QEMU finalizes a device after it left the tree.
	releasing string
	cmds      []string
}

func (f *fakeVM) serve(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	l, err := net.Listen("unix", ControlSocket(dir))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go f.conn(c)
		}
	}()
	return dir
}

func (f *fakeVM) conn(c net.Conn) {
	defer c.Close()
	fmt.Fprintln(c, `{"QMP": {"version": {"qemu": {"micro": 22, "minor": 2, "major": 7}}, "capabilities": []}}`)
	r := bufio.NewReader(c)
	for {
		line, err := r.ReadBytes('\n')
		if err != nil {
			return
		}
		var req struct {
			Execute   string         `json:"execute"`
			Arguments map[string]any `json:"arguments"`
		}
		if err := json.Unmarshal(line, &req); err != nil {
			return
		}
		ret, qerr := f.answer(req.Execute, req.Arguments)
		if qerr != "" {
			fmt.Fprintf(c, `{"error": {"class": "GenericError", "desc": %q}}`+"\n", qerr)
			continue
		}
		b, _ := json.Marshal(map[string]any{"return": ret})
		c.Write(append(b, '\n'))
	}
}

func (f *fakeVM) answer(cmd string, args map[string]any) (any, string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.cmds = append(f.cmds, cmd)
	type prop struct {
		Name string `json:"name"`
		Type string `json:"type"`
	}
	switch cmd {
	case "qmp_capabilities":
		return map[string]any{}, ""
	case "qom-list":
		path := args["path"].(string)
		if path == "/machine/peripheral" {
			props := []prop{{"type", "string"}}
			for i := 0; i < f.ports; i++ {
				props = append(props, prop{fmt.Sprintf("hotplug%d", i), "child<pcie-root-port>"})
			}
			for id := range f.devices {
				props = append(props, prop{id, "child<virtio-blk-pci>"})
			}
			if f.deleting != "" {
				if f.unplugPolls == 0 {
					delete(f.devices, f.deleting)
					f.releasing = "node-" + strings.TrimPrefix(f.deleting, "blk-")
					f.deleting = ""
				}
				f.unplugPolls--
			}
			return props, ""
		}
		props := []prop{{"type", "string"}, {"realized", "bool"}}
		n := 0
		for _, bus := range f.devices {
			if path == "/machine/peripheral/"+bus+"/"+bus {
				props = append(props, prop{fmt.Sprintf("child[%d]", n), "link<virtio-blk-pci>"})
				n++
			}
		}
		return props, ""
	case "blockdev-add":
		name := args["node-name"].(string)
		if f.nodes[name] {
			return nil, "duplicate node name"
		}
		f.nodes[name] = true
		return map[string]any{}, ""
	case "device_add":
		id, bus := args["id"].(string), args["bus"].(string)
		if _, dup := f.devices[id]; dup {
			return nil, "Duplicate device ID '" + id + "'"
		}
		for _, b := range f.devices {
			if b == bus && bus != "pci.0" {
				return nil, "slot in use"
			}
		}
		f.devices[id] = bus
		return map[string]any{}, ""
	case "device_del":
		f.deleting = args["id"].(string)
		return map[string]any{}, ""
	case "query-block":
		var backends []map[string]any
		for id := range f.devices {
			backends = append(backends, map[string]any{"device": "", "inserted": map[string]string{"node-name": "node-" + strings.TrimPrefix(id, "blk-")}})
		}
		if f.releasing != "" {
			backends = append(backends, map[string]any{"device": "", "inserted": map[string]string{"node-name": f.releasing}})
			f.releasing = ""
		}
		return backends, ""
	case "query-named-block-nodes":
		var nodes []map[string]string
		for n := range f.nodes {
			nodes = append(nodes, map[string]string{"node-name": n})
		}
		return nodes, ""
	case "blockdev-del":
		name := args["node-name"].(string)
		if name == f.releasing {
			return nil, "node is in use"
		}
		for id := range f.devices {
			if "node-"+strings.TrimPrefix(id, "blk-") == name {
				return nil, "node is in use"
			}
		}
		delete(f.nodes, name)
		return map[string]any{}, ""
	}
	return nil, "unknown command " + cmd
}

func TestAttachDetachBlock(t *testing.T) {
	f := &fakeVM{ports: 2, devices: map[string]string{}, nodes: map[string]bool{}, unplugPolls: 3}
	dir := f.serve(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	disk := func(serial string) hypervisor.BlockDevice {
		return hypervisor.BlockDevice{Path: "/dev/loop7", Serial: serial}
	}
	for _, s := range []string{"hull-a", "hull-b"} {
		if err := AttachBlock(ctx, dir, "q35", disk(s)); err != nil {
			t.Fatalf("attaching %s: %v", s, err)
		}
	}
	if f.devices["blk-hull-a"] != "hotplug0" || f.devices["blk-hull-b"] != "hotplug1" {
		t.Fatalf("devices on %v", f.devices)
	}
	err := AttachBlock(ctx, dir, "q35", disk("hull-c"))
	if !errors.Is(err, ErrNoPort) || !strings.Contains(err.Error(), "all 2 are in use") {
		t.Fatalf("third disk in two ports: %v", err)
	}
	if err := AttachBlock(ctx, dir, "q35", disk("bad serial")); err == nil {
		t.Fatal("attached a disk with a bad serial")
	}
	if err := DetachBlock(ctx, dir, "hull-a"); err != nil {
		t.Fatalf("detaching: %v", err)
	}
	if _, ok := f.devices["blk-hull-a"]; ok || f.nodes["node-hull-a"] {
		t.Fatalf("left after detach: %v %v", f.devices, f.nodes)
	}
	// The freed port takes the next disk.
	if err := AttachBlock(ctx, dir, "q35", disk("hull-c")); err != nil || f.devices["blk-hull-c"] != "hotplug0" {
		t.Fatalf("reusing a port: %v, %v", err, f.devices)
	}
	// Detaching what is not there (again, or never plugged) is no error.
	for _, s := range []string{"hull-a", "hull-zz"} {
		if err := DetachBlock(ctx, dir, s); err != nil {
			t.Errorf("detaching absent %s: %v", s, err)
		}
	}
	// A guest that never lets go: the deadline ends the wait.
	f.mu.Lock()
	f.unplugPolls = 1 << 30
	f.mu.Unlock()
	short, cancelShort := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancelShort()
	if err := DetachBlock(short, dir, "hull-b"); err == nil || !strings.Contains(err.Error(), "did not release") {
		t.Errorf("detaching a disk the guest holds: %v", err)
	}
}

func TestAttachBlockNoPorts(t *testing.T) {
	f := &fakeVM{devices: map[string]string{}, nodes: map[string]bool{}}
	dir := f.serve(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := AttachBlock(ctx, dir, "q35", hypervisor.BlockDevice{Path: "/dev/loop7", Serial: "hull-a"})
	if !errors.Is(err, ErrNoPort) || !strings.Contains(err.Error(), "hotplug_ports = 0") {
		t.Fatalf("no ports: %v", err)
	}
	if len(f.nodes) != 0 || len(f.devices) != 0 {
		t.Errorf("left behind: %v %v", f.nodes, f.devices)
	}
	// pc plugs into its root bus.
	if err := AttachBlock(ctx, dir, "pc", hypervisor.BlockDevice{Path: "/dev/loop7", Serial: "hull-a"}); err != nil || f.devices["blk-hull-a"] != "pci.0" {
		t.Fatalf("pc: %v, %v", err, f.devices)
	}
}
