// Package oci loads and checks OCI bundles: config.json and its rootfs.
package oci

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// Bundle is a loaded OCI bundle.
type Bundle struct {
	Dir    string
	Spec   *specs.Spec
	Rootfs string // absolute host path of the root filesystem
}

// ErrInvalidID is returned for container ids runc would refuse.
var ErrInvalidID = errors.New("invalid container id")

var idPattern = regexp.MustCompile(`^[\w+\-.]+$`)

// ValidateID checks a container id the way runc does, and bounds its length
// so that the sockets named after it fit in a unix socket path.
func ValidateID(id string) error {
	if id == "" || id == "." || id == ".." || len(id) > 64 || !idPattern.MatchString(id) {
		return fmt.Errorf("%w: %q", ErrInvalidID, id)
	}
	return nil
}

// Load reads dir/config.json and checks what hull needs of it.
func Load(dir string) (*Bundle, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	b, err := os.ReadFile(filepath.Join(abs, "config.json"))
	if err != nil {
		return nil, fmt.Errorf("reading bundle config: %w", err)
	}
	var s specs.Spec
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("parsing %s: %w", filepath.Join(abs, "config.json"), err)
	}
	bundle := &Bundle{Dir: abs, Spec: &s}
	if err := bundle.validate(); err != nil {
		return nil, fmt.Errorf("bundle %s: %w", abs, err)
	}
	return bundle, nil
}

func (b *Bundle) validate() error {
	s := b.Spec
	if s.Root == nil || s.Root.Path == "" {
		return errors.New("config.json: root.path is required")
	}
	if s.Process == nil {
		return errors.New("config.json: process is required")
	}
	if len(s.Process.Args) == 0 {
		return errors.New("config.json: process.args must not be empty")
	}
	if s.Process.Cwd != "" && !filepath.IsAbs(s.Process.Cwd) {
		return fmt.Errorf("config.json: process.cwd %q must be absolute", s.Process.Cwd)
	}
	root := s.Root.Path
	if !filepath.IsAbs(root) {
		root = filepath.Join(b.Dir, root)
	}
	fi, err := os.Stat(root)
	if err != nil {
		return fmt.Errorf("rootfs: %w", err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("rootfs %s is not a directory", root)
	}
	b.Rootfs = root
	return nil
}

// ErrHostNetwork is returned for a spec without a network namespace: the
// host's own network cannot be carried into a VM (as in Kata).
var ErrHostNetwork = errors.New("host networking is not supported: a hull container runs in a VM with a network of its own (give it a network namespace, not --net=host)")

// NetworkNamespace is the path of the network namespace the spec names, or
// "" when it asks for a new one (a VM with loopback only). A spec without
// a network namespace would share the host's: ErrHostNetwork.
func NetworkNamespace(s *specs.Spec) (string, error) {
	if s.Linux != nil {
		for _, ns := range s.Linux.Namespaces {
			if ns.Type != specs.NetworkNamespace {
				continue
			}
			if ns.Path != "" && !filepath.IsAbs(ns.Path) {
				return "", fmt.Errorf("network namespace path %q is not absolute", ns.Path)
			}
			return ns.Path, nil
		}
	}
	return "", ErrHostNetwork
}
