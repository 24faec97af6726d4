package oci

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

func TestValidateID(t *testing.T) {
	for _, id := range []string{"a", "ctr-1", "my.container_2", strings.Repeat("x", 64)} {
		if err := ValidateID(id); err != nil {
			t.Errorf("ValidateID(%q) = %v", id, err)
		}
	}
	for _, id := range []string{"", ".", "..", "a/b", "a b", "../x", strings.Repeat("x", 65)} {
		if err := ValidateID(id); !errors.Is(err, ErrInvalidID) {
			t.Errorf("ValidateID(%q) = %v, want ErrInvalidID", id, err)
		}
	}
}

func TestLoad(t *testing.T) {
	tests := []struct {
		name, config string
		rootfs       bool
		wantErr      string
	}{
		{"ok", `{"ociVersion":"1.0.2","root":{"path":"rootfs"},"process":{"args":["sh"],"cwd":"/"}}`, true, ""},
		{"malformed", `{"root":`, true, "parsing"},
		{"no root", `{"process":{"args":["sh"]}}`, true, "root.path is required"},
		{"no process", `{"root":{"path":"rootfs"}}`, true, "process is required"},
		{"empty args", `{"root":{"path":"rootfs"},"process":{"args":[]}}`, true, "process.args"},
		{"relative cwd", `{"root":{"path":"rootfs"},"process":{"args":["sh"],"cwd":"tmp"}}`, true, "must be absolute"},
		{"missing rootfs", `{"root":{"path":"rootfs"},"process":{"args":["sh"]}}`, false, "rootfs"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, "config.json"), []byte(tt.config), 0o644); err != nil {
				t.Fatal(err)
			}
			if tt.rootfs {
				if err := os.Mkdir(filepath.Join(dir, "rootfs"), 0o755); err != nil {
					t.Fatal(err)
				}
			}
			b, err := Load(dir)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if b.Rootfs != filepath.Join(dir, "rootfs") {
				t.Errorf("rootfs = %s", b.Rootfs)
			}
		})
	}
	if _, err := Load(t.TempDir()); err == nil || !strings.Contains(err.Error(), "config.json") {
		t.Errorf("missing config.json: err = %v", err)
	}
}

func TestNetworkNamespace(t *testing.T) {
	netns := func(path string) *specs.Spec {
		return &specs.Spec{Linux: &specs.Linux{Namespaces: []specs.LinuxNamespace{
			{Type: specs.PIDNamespace}, {Type: specs.NetworkNamespace, Path: path},
		}}}
	}
	for _, tc := range []struct {
		name    string
		spec    *specs.Spec
		want    string
		wantErr error
	}{
		{"new namespace", netns(""), "", nil},
		{"cni namespace", netns("/var/run/netns/cni-1"), "/var/run/netns/cni-1", nil},
		{"relative path", netns("netns/x"), "", errAny},
		{"host network", &specs.Spec{Linux: &specs.Linux{Namespaces: []specs.LinuxNamespace{{Type: specs.PIDNamespace}}}}, "", ErrHostNetwork},
		{"no linux section", &specs.Spec{}, "", ErrHostNetwork},
	} {
		got, err := NetworkNamespace(tc.spec)
		switch {
		case tc.wantErr == nil && err != nil, tc.wantErr != nil && err == nil:
			t.Errorf("%s: err = %v, want %v", tc.name, err, tc.wantErr)
		case tc.wantErr != nil && tc.wantErr != errAny && !errors.Is(err, tc.wantErr):
			t.Errorf("%s: err = %v, want %v", tc.name, err, tc.wantErr)
		case got != tc.want:
			t.Errorf("%s: path %q, want %q", tc.name, got, tc.want)
		}
	}
}

var errAny = errors.New("any error")
