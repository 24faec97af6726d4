package hostcgroup

import (
	"errors"
	"strings"
	"testing"
)

func TestParsePath(t *testing.T) {
	tests := []struct {
		in, want string
	}{
		// cgroupfs: kubelet's, podman's, docker's, containerd's default.
		{"/kubepods/besteffort/pod123/abc", "/kubepods/besteffort/pod123/abc"},
		{"/libpod_parent/libpod-abc", "/libpod_parent/libpod-abc"},
		{"/docker/abc", "/docker/abc"},
		{"/default//abc/", "/default/abc"},
		{"/a/./b", "/a/b"},
		{"hull/abc", "hull/abc"},
		{"abc", "abc"},
		{"./abc", "abc"},
		// A colon alone does not make the systemd form.
		{"/a:b:c", "/a:b:c"},
		{"a:b:c", "a:b:c"},
		{"a:b", "a:b"},
		// systemd: nested slices expand, the unit is a scope.
		{"system.slice:docker:abc", "/system.slice/docker-abc.scope"},
		{"kubepods-besteffort-pod123.slice:cri-containerd:abc",
			"/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod123.slice/cri-containerd-abc.scope"},
		{"machine.slice:libpod:abc", "/machine.slice/libpod-abc.scope"},
		{":runc:abc", "/system.slice/runc-abc.scope"},
		{"-.slice:hull:abc", "/hull-abc.scope"},
		{"kubepods.slice:cri-containerd:kubepods-burstable.slice", "/kubepods.slice/kubepods-burstable.slice"},
		{"user-1000.slice::abc", "/user.slice/user-1000.slice/-abc.scope"},
	}
	for _, tt := range tests {
		got, err := ParsePath(tt.in)
		if err != nil || got != tt.want {
			t.Errorf("ParsePath(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
}

func TestParsePathRejects(t *testing.T) {
	tests := []struct {
		in, why string
	}{
		{"", "empty"},
		{"/", "root"},
		{"//", "root"},
		{".", "root"},
		{"/kubepods/../etc", `".."`},
		{"../escape", `".."`},
		{"/a/b/..", `".."`},
		{"..", `".."`},
		{"/a\nb", "control"},
		{"/a\x00b", "control"},
		{"kubepods--a.slice:cri:abc", "empty component"},
		{"-kubepods.slice:cri:abc", "empty component"},
		{".slice:cri:abc", "not a slice"},
		{"system.slice:docker:", "non-empty"},
		{"system.slice:do/cker:abc", "non-empty file names"},
		{"system.slice:docker:a/b", "non-empty file names"},
		{"system.slice:docker:..", ""}, // a unit named "docker-...scope" is fine
	}
	for _, tt := range tests {
		got, err := ParsePath(tt.in)
		if tt.why == "" {
			if err != nil || strings.Contains(got, "/../") {
				t.Errorf("ParsePath(%q) = %q, %v", tt.in, got, err)
			}
			continue
		}
		if err == nil {
			t.Errorf("ParsePath(%q) = %q, want an error (%s)", tt.in, got, tt.why)
			continue
		}
		if !errors.Is(err, ErrInvalidPath) || !strings.Contains(err.Error(), tt.why) {
			t.Errorf("ParsePath(%q): %v, want ErrInvalidPath saying %q", tt.in, err, tt.why)
		}
	}
}
