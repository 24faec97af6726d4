package channel

import (
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"testing"

	"github.com/hashicorp/yamux"
)

func TestFindPort(t *testing.T) {
	sys := t.TempDir()
	for dev, name := range map[string]string{"vport1p1": "org.qemu.guest_agent.0", "vport2p1": PortName + "\n"} {
		d := filepath.Join(sys, "class/virtio-ports", dev)
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(d, "name"), []byte(name), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := FindPort(sys, PortName)
	if err != nil || got != "/dev/vport2p1" {
		t.Fatalf("FindPort = %q, %v", got, err)
	}
	if _, err := FindPort(sys, "missing"); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("missing port: %v", err)
	}
}

// Streams opened by the host reach the guest independently: data on one
// does not wait for a reader on another.
func TestStreamsAreIndependent(t *testing.T) {
	host, guest := net.Pipe()
	s, err := New(host)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	l, err := yamux.Server(guest, config())
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	a, _ := s.Open()
	b, _ := s.Open()
	ga, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	gb, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	// Fill stream a without reading it, then use b.
	go a.Write(make([]byte, 64<<10))
	if _, err := b.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(gb, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("stream b blocked behind a: %q %v", buf, err)
	}
	if _, err := io.ReadFull(ga, make([]byte, 64<<10)); err != nil {
		t.Fatal(err)
	}
	s.Close()
	select {
	case <-s.Done():
	default:
		t.Fatal("Done not closed after Close")
	}
}
