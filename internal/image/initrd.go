package image

import (
	"bytes"
	"encoding/json"
	"fmt"
	"path"
	"slices"
	"strings"
)

// Paths the guest agent reads from the initrd.
const (
	guestModuleList = "etc/hull/modules"    // absolute module paths, one a line, in load order
	guestImageInfo  = "etc/hull/image.json" // guestInfo
)

// guestInfo is /etc/hull/image.json, for the agent to report what it booted.
type guestInfo struct {
	KernelVersion string   `json:"kernelVersion"`
	Digest        string   `json:"digest"`
	Modules       []string `json:"modules"`
}

// baseDirs are created in every initrd: the mount points PID 1 needs before
// it can mount anything else. /tmp is sticky and world-writable as usual.
var baseDirs = map[string]uint32{
	"dev": 0o755, "proc": 0o555, "sys": 0o555, "run": 0o755, "tmp": 0o1777,
	"etc": 0o755, "etc/hull": 0o755, "lib": 0o755, "lib/modules": 0o755,
}

// initrdInput is everything that goes into the initrd.
type initrdInput struct {
	kver    string
	digest  string
	agent   []byte
	modules []*module
	data    [][]byte // contents of modules[i]
}

// buildInitrd returns the initrd as a cpio archive. Entries are sorted by
// name, which also puts each directory before what it holds, and carry no
// host metadata, so the same input gives the same bytes.
func buildInitrd(in initrdInput) ([]byte, error) {
	info := guestInfo{KernelVersion: in.kver, Digest: in.digest, Modules: []string{}}
	var list strings.Builder
	ents := []cpioEntry{
		{name: "init", mode: modeReg | 0o755, data: in.agent},
		// PID 1 gets its stdio from /dev/console before devtmpfs is mounted.
		{name: "dev/console", mode: modeChar | 0o600, major: 5, minor: 1},
	}
	dirs := make(map[string]uint32)
	for d, perm := range baseDirs {
		dirs[d] = perm
	}
	for i, m := range in.modules {
		name := path.Join("lib/modules", in.kver, m.path)
		ents = append(ents, cpioEntry{name: name, mode: modeReg | 0o644, data: in.data[i]})
		for d := path.Dir(name); d != "."; d = path.Dir(d) {
			if _, ok := dirs[d]; !ok {
				dirs[d] = 0o755
			}
		}
		fmt.Fprintf(&list, "/%s\n", name)
		info.Modules = append(info.Modules, m.name)
	}
	infoJSON, err := json.MarshalIndent(info, "", "\t")
	if err != nil {
		return nil, fmt.Errorf("encoding image info: %w", err)
	}
	ents = append(ents,
		cpioEntry{name: guestModuleList, mode: modeReg | 0o644, data: []byte(list.String())},
		cpioEntry{name: guestImageInfo, mode: modeReg | 0o644, data: append(infoJSON, '\n')},
	)
	for d, perm := range dirs {
		ents = append(ents, cpioEntry{name: d, mode: modeDir | perm})
	}
	slices.SortFunc(ents, func(a, b cpioEntry) int { return strings.Compare(a.name, b.name) })

	var buf bytes.Buffer
	cw := newCPIOWriter(&buf)
	for i, e := range ents {
		if i > 0 && ents[i-1].name == e.name {
			return nil, fmt.Errorf("initrd: duplicate entry %s", e.name)
		}
		if err := cw.writeEntry(e); err != nil {
			return nil, fmt.Errorf("initrd: %w", err)
		}
	}
	if err := cw.close(); err != nil {
		return nil, fmt.Errorf("initrd: %w", err)
	}
	return buf.Bytes(), nil
}
