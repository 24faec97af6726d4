package agentclient

import (
	"bytes"
	"context"
	"errors"
	"net"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/ttrpc"
	"github.com/hashicorp/yamux"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"

	agent "github.com/hullrt/hull/api/agent/v1"
	"github.com/hullrt/hull/internal/channel"
)

// fakeAgent answers the calls the tests make; any other call panics
// through the nil embedded interface.
type fakeAgent struct {
	agent.AgentService

	mu    sync.Mutex
	stdin bytes.Buffer
	out   [][]byte // successive ReadStdout answers
	exit  int32
	ver   uint32

	closedOut []*agent.CloseOutputRequest
}

func (f *fakeAgent) Check(context.Context, *agent.CheckRequest) (*agent.CheckResponse, error) {
	return &agent.CheckResponse{Status: agent.CheckResponse_SERVING}, nil
}

func (f *fakeAgent) Version(context.Context, *agent.VersionRequest) (*agent.VersionResponse, error) {
	return &agent.VersionResponse{ApiVersion: f.ver, KernelRelease: "6.1-guest"}, nil
}

func (f *fakeAgent) WriteStdin(_ context.Context, r *agent.WriteStreamRequest) (*agent.WriteStreamResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	// Take at most 1000 bytes a call, to exercise short writes.
	n := min(len(r.Data), 1000)
	f.stdin.Write(r.Data[:n])
	return &agent.WriteStreamResponse{Len: uint32(n)}, nil
}

func (f *fakeAgent) CloseStdin(context.Context, *agent.CloseStdinRequest) (*emptypb.Empty, error) {
	return &emptypb.Empty{}, nil
}

func (f *fakeAgent) ReadStdout(context.Context, *agent.ReadStreamRequest) (*agent.ReadStreamResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.out) == 0 {
		return &agent.ReadStreamResponse{Eof: true}, nil
	}
	d := f.out[0]
	f.out = f.out[1:]
	return &agent.ReadStreamResponse{Data: d}, nil
}

func (f *fakeAgent) CloseOutput(_ context.Context, r *agent.CloseOutputRequest) (*emptypb.Empty, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closedOut = append(f.closedOut, r)
	return &emptypb.Empty{}, nil
}

func (f *fakeAgent) WaitProcess(context.Context, *agent.WaitProcessRequest) (*agent.WaitProcessResponse, error) {
	return &agent.WaitProcessResponse{ExitStatus: f.exit}, nil
}

func (f *fakeAgent) StartContainer(_ context.Context, r *agent.StartContainerRequest) (*emptypb.Empty, error) {
	return nil, status.Errorf(codes.NotFound, "container %s not found", r.ContainerId)
}

// connect runs f behind the guest end of a channel on an in-memory pipe
// and returns a client on the host end.
func connect(t *testing.T, f *fakeAgent) *Client {
	t.Helper()
	host, guest := net.Pipe()
	srv, err := ttrpc.NewServer()
	if err != nil {
		t.Fatal(err)
	}
	agent.RegisterAgentService(srv, f)
	l, err := yamux.Server(guest, nil)
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(context.Background(), l)
	s, err := channel.New(host)
	if err != nil {
		t.Fatal(err)
	}
	c, err := New(s, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c.Close()
		s.Close()
		srv.Close()
	})
	return c
}

func TestWaitReady(t *testing.T) {
	c := connect(t, &fakeAgent{ver: agent.APIVersion})
	v, err := c.WaitReady(context.Background())
	if err != nil || v.KernelRelease != "6.1-guest" {
		t.Fatalf("WaitReady = %v, %v", v, err)
	}
	old := connect(t, &fakeAgent{ver: 0})
	if _, err := old.WaitReady(context.Background()); err == nil || !strings.Contains(err.Error(), "rebuild the guest image") {
		t.Fatalf("old agent accepted: %v", err)
	}
}

func TestCopyInShortWrites(t *testing.T) {
	f := &fakeAgent{}
	c := connect(t, f)
	data := bytes.Repeat([]byte("0123456789"), 100_000) // 1 MB, several chunks
	if err := c.CopyIn(context.Background(), "c", "", bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(f.stdin.Bytes(), data) {
		t.Fatalf("agent got %d bytes, want %d", f.stdin.Len(), len(data))
	}
}

func TestCopyOut(t *testing.T) {
	c := connect(t, &fakeAgent{out: [][]byte{[]byte("hello "), []byte("world")}})
	var out bytes.Buffer
	if err := c.CopyOut(context.Background(), "c", "", false, &out); err != nil {
		t.Fatal(err)
	}
	if out.String() != "hello world" {
		t.Fatalf("got %q", out.String())
	}
}

// failingWriter's reader has gone.
type failingWriter struct{}

func (failingWriter) Write([]byte) (int, error) { return 0, syscall.EPIPE }

func TestCopyOutClosesTheGuestStreamWhenTheReaderGoes(t *testing.T) {
	f := &fakeAgent{out: [][]byte{[]byte("y\n"), []byte("y\n")}}
	c := connect(t, f)
	err := c.CopyOut(context.Background(), "c", "e", false, failingWriter{})
	if !errors.Is(err, syscall.EPIPE) {
		t.Fatalf("CopyOut = %v, want EPIPE", err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.closedOut) != 1 || f.closedOut[0].ContainerId != "c" || f.closedOut[0].ExecId != "e" || f.closedOut[0].Stderr {
		t.Fatalf("CloseOutput calls: %v, want one for c/e stdout", f.closedOut)
	}
	if len(f.out) != 1 {
		t.Errorf("CopyOut read on after the failed write: %d answers left, want 1", len(f.out))
	}
}

func TestCopyOutRejectsOversizedAnswer(t *testing.T) {
	c := connect(t, &fakeAgent{out: [][]byte{make([]byte, ioChunk+1)}})
	if err := c.CopyOut(context.Background(), "c", "", false, &bytes.Buffer{}); err == nil {
		t.Fatal("oversized answer from a hostile guest accepted")
	}
}

func TestWaitValidatesExitStatus(t *testing.T) {
	for _, tc := range []struct {
		exit int32
		ok   bool
	}{{0, true}, {143, true}, {255, true}, {-1, false}, {256, false}} {
		c := connect(t, &fakeAgent{exit: tc.exit})
		st, _, err := c.Wait(context.Background(), "c", "")
		if tc.ok && (err != nil || st != int(tc.exit)) {
			t.Errorf("exit %d: got %d, %v", tc.exit, st, err)
		}
		if !tc.ok && err == nil {
			t.Errorf("exit %d from a hostile guest accepted", tc.exit)
		}
	}
}

func TestErrorsLoseRPCFraming(t *testing.T) {
	c := connect(t, &fakeAgent{})
	err := c.StartContainer(context.Background(), "nope")
	if !errors.Is(err, ErrNotFound) {
		t.Fatalf("err = %v, want ErrNotFound", err)
	}
	if err.Error() != "container nope not found" {
		t.Fatalf("message %q still framed", err.Error())
	}
}
