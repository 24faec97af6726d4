package main

import (
	"errors"
	"os"
	"syscall"
	"testing"
)

func TestEndOnEPIPE(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	ended := 0
	e := endOnEPIPE{w: w, end: func() { ended++ }}
	if _, err := e.Write([]byte("read\n")); err != nil || ended != 0 {
		t.Fatalf("write with a reader: err %v, ended %d times", err, ended)
	}
	r.Close()
	if _, err := e.Write([]byte("lost\n")); !errors.Is(err, syscall.EPIPE) {
		t.Fatalf("write without a reader: err %v, want EPIPE", err)
	}
	if ended != 1 {
		t.Fatalf("ended %d times after EPIPE, want 1", ended)
	}
}
