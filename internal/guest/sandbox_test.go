package guest

import (
	"context"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	agent "github.com/hullrt/hull/api/agent/v1"
)

// A pool's VM has its share mounted before the claim (CreateSandbox
// without an id); the claimer's CreateSandbox names the same storage,
// which stays as it is, and takes the sandbox.
func TestCreateSandboxKeepsPremountedShare(t *testing.T) {
	share := &agent.Storage{Source: "hullfs", Fstype: "virtiofs", MountPoint: "/run/hull/shared"}
	a := NewAgent()
	a.mounts = []*agent.Storage{share} // as the pool's CreateSandbox left it
	same := &agent.Storage{Source: "hullfs", Fstype: "virtiofs", MountPoint: "/run/hull/shared"}
	if _, err := a.CreateSandbox(context.Background(), &agent.CreateSandboxRequest{SandboxId: "pod", Storages: []*agent.Storage{same}}); err != nil {
		t.Fatal(err)
	}
	if a.sandboxID != "pod" || len(a.mounts) != 1 {
		t.Fatalf("sandbox %q, mounts %v", a.sandboxID, a.mounts)
	}
	if _, err := a.CreateSandbox(context.Background(), &agent.CreateSandboxRequest{SandboxId: "again"}); status.Code(err) != codes.AlreadyExists {
		t.Errorf("a second sandbox: %v, want AlreadyExists", err)
	}
}

func TestCreateSandboxRefusesAnotherStorageOnAMountPoint(t *testing.T) {
	share := &agent.Storage{Source: "hullfs", Fstype: "virtiofs", MountPoint: "/run/hull/shared"}
	for name, storages := range map[string][]*agent.Storage{
		"another source": {{Source: "other", Fstype: "virtiofs", MountPoint: "/run/hull/shared"}},
		"another type":   {{Source: "hullfs", Fstype: "9p", MountPoint: "/run/hull/shared", Options: []string{"trans=virtio"}}},
		"twice in one request": {
			{Source: "a", Fstype: "virtiofs", MountPoint: "/run/hull/x"},
			{Source: "b", Fstype: "virtiofs", MountPoint: "/run/hull/x"},
		},
	} {
		a := NewAgent()
		a.mounts = []*agent.Storage{share}
		_, err := a.CreateSandbox(context.Background(), &agent.CreateSandboxRequest{SandboxId: "pod", Storages: storages})
		if status.Code(err) != codes.InvalidArgument {
			t.Errorf("%s: %v, want InvalidArgument", name, err)
		}
		if a.sandboxID != "" || len(a.mounts) != 1 {
			t.Errorf("%s: refused, but sandbox %q, mounts %v", name, a.sandboxID, a.mounts)
		}
	}
}
