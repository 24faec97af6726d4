package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func writeConfig(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "config.toml")
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestDefaultsAreValid(t *testing.T) {
	t.Setenv(EnvPath, "")
	c := Default()
	c.fill()
	if err := c.Validate(); err != nil {
		t.Fatalf("defaults invalid: %v", err)
	}
	if c.Hypervisor.Kernel != "/var/lib/hull/image/vmlinuz" {
		t.Errorf("kernel default = %q", c.Hypervisor.Kernel)
	}
}

func TestLoad(t *testing.T) {
	tests := []struct {
		name    string
		body    string
		wantErr string
		check   func(*testing.T, *Config)
	}{
		{name: "empty file keeps defaults", body: "", check: func(t *testing.T, c *Config) {
			if c.Hypervisor.VCPUs != 1 || c.Storage.SharedFS != "virtio-fs" {
				t.Errorf("defaults lost: %+v", c)
			}
		}},
		{name: "overrides", body: "[hypervisor]\nvcpus = 2\nboot_timeout = \"5s\"\n[image]\ndir = \"/srv/img\"\n", check: func(t *testing.T, c *Config) {
			if c.Hypervisor.VCPUs != 2 || c.Hypervisor.BootTimeout.Duration != 5*time.Second {
				t.Errorf("overrides not applied: %+v", c.Hypervisor)
			}
			if c.Hypervisor.Initrd != "/srv/img/initrd.img" {
				t.Errorf("initrd not derived from image.dir: %q", c.Hypervisor.Initrd)
			}
		}},
		{name: "unknown key", body: "[hypervisor]\ncpus = 2\n", wantErr: "unknown keys: hypervisor.cpus"},
		{name: "bad accel", body: "[hypervisor]\naccel = \"hvf\"\n", wantErr: "hypervisor.accel"},
		{name: "microvm over virtio-fs", body: "[hypervisor]\nmachine = \"microvm\"\n", wantErr: "virtio-9p"},
		{name: "bad firmware", body: "[hypervisor]\nfirmware = \"qboot.rom\"\n", wantErr: "hypervisor.firmware"},
		{name: "bad memory", body: "[hypervisor]\nmemory_mib = 8\n", wantErr: "hypervisor.memory_mib"},
		{name: "max vcpus below vcpus", body: "[hypervisor]\nvcpus = 2\nmax_vcpus = 1\n", wantErr: "hypervisor.max_vcpus"},
		{name: "max memory below memory", body: "[hypervisor]\nmax_memory_mib = 256\n", wantErr: "hypervisor.max_memory_mib"},
		{name: "max size", body: "[hypervisor]\nmax_vcpus = 4\nmax_memory_mib = 4096\n", check: func(t *testing.T, c *Config) {
			if c.Hypervisor.MaxVCPUs != 4 || c.Hypervisor.MaxMemoryMiB != 4096 {
				t.Errorf("max size not applied: %+v", c.Hypervisor)
			}
		}},
		{name: "bad duration", body: "[hypervisor]\nboot_timeout = \"soon\"\n", wantErr: "invalid duration"},
		{name: "too many hotplug ports", body: "[hypervisor]\nhotplug_ports = 17\n", wantErr: "hypervisor.hotplug_ports"},
		{name: "negative hotplug ports", body: "[hypervisor]\nhotplug_ports = -1\n", wantErr: "hypervisor.hotplug_ports"},
		{name: "no hotplug ports", body: "[hypervisor]\nhotplug_ports = 0\n", check: func(t *testing.T, c *Config) {
			if c.Hypervisor.HotplugPorts != 0 {
				t.Errorf("hotplug_ports = %d", c.Hypervisor.HotplugPorts)
			}
		}},
		{name: "bad shared fs", body: "[storage]\nshared_fs = \"nfs\"\n", wantErr: "storage.shared_fs"},
		{name: "syntax error", body: "[hypervisor\n", wantErr: "loading config"},
		{name: "relative root", body: "[runtime]\nroot = \"run\"\n", wantErr: "runtime.root"},
		{name: "sandbox cgroup on by default", body: "[runtime]\n", check: func(t *testing.T, c *Config) {
			if !c.Runtime.SandboxCgroup {
				t.Error("runtime.sandbox_cgroup is off by default")
			}
		}},
		{name: "sandbox cgroup off", body: "[runtime]\nsandbox_cgroup = false\n", check: func(t *testing.T, c *Config) {
			if c.Runtime.SandboxCgroup {
				t.Error("runtime.sandbox_cgroup = false not applied")
			}
		}},
		{name: "sandbox cgroup not a bool", body: "[runtime]\nsandbox_cgroup = \"yes\"\n", wantErr: "sandbox_cgroup"},
		{name: "tuned kernel", body: "[image]\nkernel = \"tuned\"\n", check: func(t *testing.T, c *Config) {
			if c.Image.Kernel != "tuned" {
				t.Errorf("image.kernel = %q", c.Image.Kernel)
			}
		}},
		{name: "relative kernel", body: "[image]\nkernel = \"bzImage\"\n", wantErr: "image.kernel"},
		{name: "kernel and kernel version", body: "[image]\nkernel = \"/k/bzImage\"\nkernel_version = \"6.1.0-9-amd64\"\n", wantErr: "mutually exclusive"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Load(writeConfig(t, tt.body))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tt.check(t, c)
		})
	}
}

func TestLoadMissing(t *testing.T) {
	if _, err := Load(filepath.Join(t.TempDir(), "nope.toml")); err == nil {
		t.Fatal("explicit missing config file accepted")
	}
	t.Setenv(EnvPath, filepath.Join(t.TempDir(), "nope.toml"))
	if _, err := Load(""); err == nil {
		t.Fatal("missing $HULL_CONFIG file accepted")
	}
}

func TestEnvOverride(t *testing.T) {
	t.Setenv(EnvPath, writeConfig(t, "[hypervisor]\nmemory_mib = 256\n"))
	c, err := Load("")
	if err != nil {
		t.Fatal(err)
	}
	if c.Hypervisor.MemoryMiB != 256 {
		t.Errorf("HULL_CONFIG not used: memory %d", c.Hypervisor.MemoryMiB)
	}
}

func TestWithAnnotations(t *testing.T) {
	base := Default()
	base.fill()
	base.Hypervisor.EnableAnnotations = []string{"vcpus", "hypervisor.kernel_params"}
	tests := []struct {
		name    string
		ann     map[string]string
		wantErr string
		check   func(*testing.T, *Config)
	}{
		{name: "none", ann: map[string]string{"other": "x"}, check: func(t *testing.T, c *Config) {
			if c != base {
				t.Error("copy made without annotations")
			}
		}},
		{name: "enabled", ann: map[string]string{AnnotationPrefix + "hypervisor.vcpus": "2", AnnotationPrefix + "hypervisor.kernel_params": "foo=1"}, check: func(t *testing.T, c *Config) {
			if c.Hypervisor.VCPUs != 2 || c.Hypervisor.KernelParams != "foo=1" {
				t.Errorf("not applied: %+v", c.Hypervisor)
			}
			if base.Hypervisor.VCPUs != 1 {
				t.Error("base config changed")
			}
		}},
		{name: "not enabled", ann: map[string]string{AnnotationPrefix + "hypervisor.memory_mib": "128"}, wantErr: "not enabled"},
		{name: "unknown", ann: map[string]string{AnnotationPrefix + "hypervisor.path": "/bin/evil"}, wantErr: "unknown configuration key"},
		{name: "bad value", ann: map[string]string{AnnotationPrefix + "hypervisor.vcpus": "many"}, wantErr: "invalid value"},
		{name: "out of range", ann: map[string]string{AnnotationPrefix + "hypervisor.vcpus": "1000"}, wantErr: "hypervisor.vcpus must be"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := base.WithAnnotations(tt.ann)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tt.check(t, c)
		})
	}
}
