package guest

import (
	"errors"
	"os"
	"syscall"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/hullrt/hull/internal/guest/ctr"
)

// TestCloseOutputFailsTheWriter: once the host's reader has gone, the
// process's writes fail with EPIPE, as on a pipe whose reader exited, and
// a read that was waiting for output ends at EOF.
func TestCloseOutputFailsTheWriter(t *testing.T) {
	lp := &ctr.Process{}
	p, err := newIO(lp, &specs.Process{})
	if err != nil {
		t.Fatal(err)
	}
	defer p.closeAll()
	w, ok := lp.Stdout.(*os.File)
	if !ok {
		t.Fatalf("the process's stdout is a %T", lp.Stdout)
	}
	if _, err := w.Write([]byte("y\n")); err != nil {
		t.Fatal(err)
	}
	if data, eof, err := p.read(false, 0); string(data) != "y\n" || eof || err != nil {
		t.Fatalf("read = %q, %v, %v", data, eof, err)
	}

	type result struct {
		eof bool
		err error
	}
	waiting := make(chan result, 1)
	go func() {
		_, eof, err := p.read(false, 0)
		waiting <- result{eof, err}
	}()
	time.Sleep(50 * time.Millisecond) // let the read block; it must end either way
	if err := p.closeOutput(false); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-waiting:
		if !r.eof || r.err != nil {
			t.Errorf("the waiting read ended with eof %v, err %v; want EOF", r.eof, r.err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a read waiting for output did not end when the output was closed")
	}
	if _, err := w.Write([]byte("y\n")); !errors.Is(err, syscall.EPIPE) {
		t.Errorf("write after closeOutput: %v, want EPIPE", err)
	}
	if _, eof, err := p.read(false, 0); !eof || err != nil {
		t.Errorf("read after closeOutput: eof %v, err %v", eof, err)
	}
	// Twice is no error (a second relay, or the host retrying).
	if err := p.closeOutput(false); err != nil {
		t.Errorf("second closeOutput: %v", err)
	}
	// stderr is untouched.
	if _, err := lp.Stderr.(*os.File).Write([]byte("e")); err != nil {
		t.Errorf("stderr write after closing stdout: %v", err)
	}
}
