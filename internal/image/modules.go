package image

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// module is one loadable kernel module as modules.dep lists it.
type module struct {
	name string   // canonical name: base name without .ko, "-" read as "_"
	path string   // relative to the kernel's modules directory
	deps []string // paths of the modules it needs, as modules.dep lists them
}

// moduleTable is what depmod knows about one kernel's modules.
type moduleTable struct {
	byName  map[string]*module
	byPath  map[string]*module
	builtin map[string]bool // canonical names of modules built into the kernel
}

// readModuleTable reads modules.dep, and modules.builtin when present, from
// dir, the modules directory of one kernel (/lib/modules/<kver>).
func readModuleTable(dir string) (*moduleTable, error) {
	t := &moduleTable{
		byName:  make(map[string]*module),
		byPath:  make(map[string]*module),
		builtin: make(map[string]bool),
	}
	err := eachLine(filepath.Join(dir, "modules.dep"), func(line string) error {
		path, deps, ok := strings.Cut(line, ":")
		if !ok {
			return fmt.Errorf("malformed line %q", line)
		}
		m := &module{path: relModulePath(dir, path)}
		m.name = moduleName(m.path)
		for _, d := range strings.Fields(deps) {
			m.deps = append(m.deps, relModulePath(dir, d))
		}
		t.byPath[m.path] = m
		// depmod lists the module that wins first (updates/ before kernel/).
		if _, dup := t.byName[m.name]; !dup {
			t.byName[m.name] = m
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	err = eachLine(filepath.Join(dir, "modules.builtin"), func(line string) error {
		t.builtin[moduleName(line)] = true
		return nil
	})
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	return t, nil
}

// resolve returns the modules wanted and everything they depend on, each
// once, in an order that loads dependencies first. The order follows wanted
// and then modules.dep, so it is the same for the same inputs. A name ending
// in "?" is optional: when the kernel lacks it, note is told and it is
// skipped. Modules built into the kernel need no loading and are skipped too.
func (t *moduleTable) resolve(wanted []string, kver string, note func(string, ...any)) ([]*module, error) {
	const (
		visiting = 1
		done     = 2
	)
	var order []*module
	state := make(map[*module]int)
	var visit func(m *module) error
	visit = func(m *module) error {
		switch state[m] {
		case done:
			return nil
		case visiting:
			return fmt.Errorf("kernel module %s: dependency cycle in modules.dep", m.name)
		}
		state[m] = visiting
		for _, p := range m.deps {
			d := t.byPath[p]
			if d == nil {
				return fmt.Errorf("kernel module %s: dependency %s not in modules.dep", m.name, p)
			}
			if err := visit(d); err != nil {
				return err
			}
		}
		state[m] = done
		order = append(order, m)
		return nil
	}
	for _, w := range wanted {
		name, optional := strings.CutSuffix(w, "?")
		key := canonicalName(name)
		m := t.byName[key]
		switch {
		case m != nil:
			if err := visit(m); err != nil {
				return nil, err
			}
		case t.builtin[key]:
			note("kernel module %s is built into %s", name, kver)
		case optional:
			note("skipping optional kernel module %s: not in %s", name, kver)
		default:
			return nil, &notFoundError{
				msg: fmt.Sprintf("kernel module %q not found for %s", name, kver),
				err: ErrModuleNotFound,
			}
		}
	}
	return order, nil
}

// moduleName returns the canonical name of the module at path, which may be
// compressed (name.ko.xz).
func moduleName(path string) string {
	base := filepath.Base(path)
	if i := strings.Index(base, ".ko"); i > 0 {
		base = base[:i]
	}
	return canonicalName(base)
}

// canonicalName spells a module name the way the kernel compares them,
// where "-" and "_" are the same.
func canonicalName(name string) string {
	return strings.ReplaceAll(name, "-", "_")
}

// relModulePath makes p relative to dir; old depmod wrote absolute paths.
func relModulePath(dir, p string) string {
	if rel, ok := strings.CutPrefix(p, dir+"/"); ok {
		return rel
	}
	return p
}

// eachLine calls fn with each non-empty line of the file at path.
func eachLine(path string, fn func(line string) error) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		if err := fn(line); err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("reading %s: %w", path, err)
	}
	return nil
}
