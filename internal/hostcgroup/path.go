// Package hostcgroup puts a sandbox's host processes — the VMM, its helper
// daemons and the runtime process that owns them — into the cgroup that
// the sandbox's OCI spec names (linux.cgroupsPath: the pod cgroup CRI
// passes, podman's, docker's), so that the host's accounting sees what the
// VM costs. The spec's resource limits apply inside the guest; on the host
// hull sets none and the limits of the parents (the kubelet's pod cgroup)
// govern. See docs/design/009-host-cgroups.md.
package hostcgroup

import (
	"errors"
	"fmt"
	"path"
	"strings"
)

// ErrInvalidPath wraps every rejection of a spec's cgroupsPath.
var ErrInvalidPath = errors.New("invalid cgroupsPath")

// ParsePath converts a spec's linux.cgroupsPath into the cgroup path hull
// uses in every hierarchy.
//
//   - The systemd form "slice:prefix:name" becomes the path systemd (and
//     runc's systemd driver) gives the unit: the slice expanded into its
//     parents, then "prefix-name.scope" ("name" itself when it is a slice):
//     "kubepods-besteffort-pod1.slice:cri-containerd:abc" is
//     "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1.slice/cri-containerd-abc.scope".
//     An empty slice means "system.slice", as in runc.
//   - An absolute cgroupfs path ("/kubepods/besteffort/pod1/abc") is taken
//     from the root of each hierarchy.
//   - A relative cgroupfs path is returned relative; Create resolves it
//     against the calling process's own cgroup in each hierarchy, as runc
//     does.
//
// A ".." component, a control character or a path that names the root
// cgroup is refused; the result is clean.
func ParsePath(cgroupsPath string) (string, error) {
	if cgroupsPath == "" {
		return "", fmt.Errorf("%w: empty", ErrInvalidPath)
	}
	if strings.ContainsFunc(cgroupsPath, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
		return "", fmt.Errorf("%w %q: control characters", ErrInvalidPath, cgroupsPath)
	}
	p := cgroupsPath
	if isSystemd(cgroupsPath) {
		var err error
		if p, err = systemdPath(cgroupsPath); err != nil {
			return "", err
		}
	}
	for _, c := range strings.Split(p, "/") {
		if c == ".." {
			return "", fmt.Errorf("%w %q: \"..\" is not allowed", ErrInvalidPath, cgroupsPath)
		}
	}
	clean := path.Clean(p)
	if clean == "/" || clean == "." {
		return "", fmt.Errorf("%w %q: names the root cgroup", ErrInvalidPath, cgroupsPath)
	}
	return clean, nil
}

// isSystemd reports whether p has the systemd driver's "slice:prefix:name"
// form. A cgroupfs path may contain colons too, but never in that shape
// with a slice (or nothing) before the first one.
func isSystemd(p string) bool {
	parts := strings.Split(p, ":")
	return len(parts) == 3 && !strings.Contains(parts[0], "/") &&
		(parts[0] == "" || strings.HasSuffix(parts[0], ".slice"))
}

// systemdPath is the cgroup path of the unit "slice:prefix:name" names.
func systemdPath(p string) (string, error) {
	parts := strings.Split(p, ":")
	slice, prefix, name := parts[0], parts[1], parts[2]
	if slice == "" {
		slice = "system.slice"
	}
	parent, err := expandSlice(slice)
	if err != nil {
		return "", fmt.Errorf("%w %q: %v", ErrInvalidPath, p, err)
	}
	if name == "" || strings.Contains(name, "/") || strings.Contains(prefix, "/") {
		return "", fmt.Errorf("%w %q: the unit name and prefix must be non-empty file names", ErrInvalidPath, p)
	}
	unit := prefix + "-" + name + ".scope"
	if strings.HasSuffix(name, ".slice") {
		unit = name
	}
	return path.Join(parent, unit), nil
}

// expandSlice turns a systemd slice name into its path: "a-b.slice" is
// "/a.slice/a-b.slice", and "-.slice" the root.
func expandSlice(slice string) (string, error) {
	const suffix = ".slice"
	base, ok := strings.CutSuffix(slice, suffix)
	if !ok || base == "" || strings.Contains(slice, "/") {
		return "", fmt.Errorf("slice %q is not a slice name", slice)
	}
	if base == "-" {
		return "/", nil
	}
	var p, prefix string
	for _, c := range strings.Split(base, "-") {
		if c == "" {
			return "", fmt.Errorf("slice %q has an empty component", slice)
		}
		p += "/" + prefix + c + suffix
		prefix += c + "-"
	}
	return p, nil
}
