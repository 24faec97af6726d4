package main

import (
	"syscall"
	"testing"
)

func TestParseSignal(t *testing.T) {
	good := map[string]syscall.Signal{
		"TERM": syscall.SIGTERM, "SIGTERM": syscall.SIGTERM, "sigkill": syscall.SIGKILL,
		"9": syscall.SIGKILL, "USR1": syscall.SIGUSR1, "64": syscall.Signal(64),
	}
	for in, want := range good {
		if got, err := parseSignal(in); err != nil || got != want {
			t.Errorf("parseSignal(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "NOPE", "SIG", "0", "65", "-1", "9x"} {
		if _, err := parseSignal(in); err == nil {
			t.Errorf("parseSignal(%q) accepted", in)
		}
	}
}

func TestParseUser(t *testing.T) {
	if u, g, err := parseUser("1000:100"); err != nil || u != 1000 || g != 100 {
		t.Errorf("1000:100 = %d %d %v", u, g, err)
	}
	if u, g, err := parseUser("7"); err != nil || u != 7 || g != 0 {
		t.Errorf("7 = %d %d %v", u, g, err)
	}
	for _, in := range []string{"", "root", "1:x", "-1", "99999999999"} {
		if _, _, err := parseUser(in); err == nil {
			t.Errorf("parseUser(%q) accepted", in)
		}
	}
}
