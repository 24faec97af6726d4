package shim

import (
	"context"
	"os"
	"path/filepath"
	"sync"
	"testing"

	eventstypes "github.com/containerd/containerd/api/events"
	"github.com/containerd/containerd/events"
	"github.com/containerd/containerd/namespaces"
	"github.com/containerd/containerd/runtime"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

func TestSandboxOf(t *testing.T) {
	tests := []struct {
		name string
		ann  map[string]string
		want string
	}{
		{"lone container", nil, "c1"},
		{"pod sandbox", map[string]string{annotationContainerType: "sandbox", annotationSandboxID: "c1"}, "c1"},
		{"pod member", map[string]string{annotationContainerType: "container", annotationSandboxID: "pod9"}, "pod9"},
		{"member without pod id", map[string]string{annotationContainerType: "container"}, "c1"},
	}
	for _, tt := range tests {
		if got := sandboxOf("c1", &specs.Spec{Annotations: tt.ann}); got != tt.want {
			t.Errorf("%s: sandboxOf = %q, want %q", tt.name, got, tt.want)
		}
	}
	if got := sandboxOf("c1", nil); got != "c1" {
		t.Errorf("no spec: %q", got)
	}
}

func TestTopicOf(t *testing.T) {
	for e, want := range map[any]string{
		&eventstypes.TaskCreate{}:      runtime.TaskCreateEventTopic,
		&eventstypes.TaskExit{}:        runtime.TaskExitEventTopic,
		&eventstypes.TaskOOM{}:         runtime.TaskOOMEventTopic,
		&eventstypes.TaskExecStarted{}: runtime.TaskExecStartedEventTopic,
		"something else":               runtime.TaskUnknownTopic,
	} {
		if got := topicOf(e); got != want {
			t.Errorf("topicOf(%T) = %s, want %s", e, got, want)
		}
	}
}

func TestRemoveEmptyParents(t *testing.T) {
	root := t.TempDir()
	vm1 := filepath.Join(root, "pods", "k8s.io", "pod1")
	vm2 := filepath.Join(root, "pods", "k8s.io", "pod2")
	for _, d := range []string{vm1, vm2} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	os.Remove(vm1)
	removeEmptyParents(vm1)
	if _, err := os.Stat(filepath.Join(root, "pods", "k8s.io")); err != nil {
		t.Fatal("namespace dir removed while another pod lives in it")
	}
	os.Remove(vm2)
	removeEmptyParents(vm2)
	if _, err := os.Stat(filepath.Join(root, "pods")); !os.IsNotExist(err) {
		t.Fatalf("empty pods dir left: %v", err)
	}
	if _, err := os.Stat(root); err != nil {
		t.Fatal("removed above the pods dir")
	}
}

// recorder is a shim.Publisher that keeps what it is given.
type recorder struct {
	mu     sync.Mutex
	topics []string
	closed bool
}

func (r *recorder) Publish(_ context.Context, topic string, _ events.Event) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.topics = append(r.topics, topic)
	return nil
}

func (r *recorder) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.closed = true
	return nil
}

// Shutting down publishes what was sent and closes the publisher, which
// containerd's shim code waits for before it exits; later events are
// dropped, not a panic.
func TestCloseEventsClosesThePublisher(t *testing.T) {
	r := &recorder{}
	s := &service{events: make(chan any, 4), forwarded: make(chan struct{})}
	go s.forward(namespaces.WithNamespace(context.Background(), "k8s.io"), r)
	s.send(&eventstypes.TaskCreate{})
	s.send(&eventstypes.TaskExit{})
	s.closeEvents()
	s.send(&eventstypes.TaskDelete{})
	s.closeEvents()
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.closed || len(r.topics) != 2 || r.topics[1] != runtime.TaskExitEventTopic {
		t.Errorf("publisher: closed %v, topics %v", r.closed, r.topics)
	}
}
