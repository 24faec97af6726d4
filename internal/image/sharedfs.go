package image

import (
	"fmt"
	"slices"
	"strings"
)

// sharedFS is a shared filesystem a guest may mount its share with, named
// as storage.shared_fs names it, with the kernel modules it needs (their
// dependencies follow from modules.dep).
type sharedFS struct {
	kind    string
	fs      string // what the kernel calls it, for messages
	modules []string
	pkg     string // the Debian kernel package that has it
}

var sharedFilesystems = []sharedFS{
	{kind: "virtio-fs", fs: "virtiofs", modules: []string{"virtiofs"}, pkg: "linux-image-cloud-amd64"},
	{kind: "virtio-9p", fs: "9p", modules: []string{"9p", "9pnet_virtio"}, pkg: "linux-image-amd64"},
}

// SharedFSKinds lists the shared filesystems an image may support, in the
// order hull prefers them.
func SharedFSKinds() []string {
	kinds := make([]string, len(sharedFilesystems))
	for i, s := range sharedFilesystems {
		kinds[i] = s.kind
	}
	return kinds
}

func lookupSharedFS(kind string) (sharedFS, error) {
	i := slices.IndexFunc(sharedFilesystems, func(s sharedFS) bool { return s.kind == kind })
	if i < 0 {
		return sharedFS{}, fmt.Errorf("unknown shared filesystem %q (known: %s)", kind, strings.Join(SharedFSKinds(), ", "))
	}
	return sharedFilesystems[i], nil
}

// CanMount returns nil when the image's guest can mount its share with the
// shared filesystem kind ("virtio-fs", "virtio-9p"), else an error saying
// what its kernel lacks; the error wraps ErrModuleNotFound.
func (img *Image) CanMount(kind string) error {
	s, err := lookupSharedFS(kind)
	if err != nil {
		return err
	}
	if slices.Contains(img.SharedFS, kind) {
		return nil
	}
	return &notFoundError{
		msg: fmt.Sprintf("the guest kernel %s has no %s", img.KernelVersion, s.fs),
		err: ErrModuleNotFound,
	}
}

// mountable lists the shared filesystems whose modules all satisfy has.
func mountable(has func(module string) bool) []string {
	var kinds []string
	for _, s := range sharedFilesystems {
		if !slices.ContainsFunc(s.modules, func(m string) bool { return !has(m) }) {
			kinds = append(kinds, s.kind)
		}
	}
	return kinds
}

// requireModules returns wanted with every module in need required: an
// optional entry ("9p?") loses its "?", a missing one is added.
func requireModules(wanted, need []string) []string {
	out := make([]string, 0, len(wanted)+len(need))
	for _, w := range wanted {
		if name, optional := strings.CutSuffix(w, "?"); optional && slices.Contains(need, canonicalName(name)) {
			w = name
		}
		out = append(out, w)
	}
	for _, n := range need {
		if !slices.ContainsFunc(out, func(w string) bool { return canonicalName(w) == n }) {
			out = append(out, n)
		}
	}
	return out
}

// has reports whether the kernel has module name, loadable or built in.
func (t *moduleTable) has(name string) bool {
	key := canonicalName(name)
	return t.byName[key] != nil || t.builtin[key]
}
