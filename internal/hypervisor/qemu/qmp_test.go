package qemu

import (
	"bufio"
	"context"
	"encoding/json"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// serveQMP plays QEMU's side of QMP on a unix socket: greeting, then the
// answers in script, keyed by command.
func serveQMP(t *testing.T, path string, script map[string]string) <-chan []string {
	t.Helper()
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	seen := make(chan []string, 1)
	go func() {
		defer l.Close()
		c, err := l.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		var cmds []string
		defer func() { seen <- cmds }()
		c.Write([]byte(`{"QMP": {"version": {"qemu": {"micro": 22, "minor": 2, "major": 7}}, "capabilities": []}}` + "\n"))
		r := bufio.NewReader(c)
		for {
			line, err := r.ReadBytes('\n')
			if err != nil {
				return
			}
			var req struct{ Execute string }
			if err := json.Unmarshal(line, &req); err != nil {
				return
			}
			cmds = append(cmds, req.Execute)
			// An asynchronous event first, to be skipped by the client.
			c.Write([]byte(`{"event": "RESUME", "timestamp": {"seconds": 1, "microseconds": 2}}` + "\n"))
			c.Write([]byte(script[req.Execute] + "\n"))
		}
	}()
	return seen
}

func TestQMP(t *testing.T) {
	path := filepath.Join(t.TempDir(), "qmp.sock")
	seen := serveQMP(t, path, map[string]string{
		"qmp_capabilities": `{"return": {}}`,
		"query-status":     `{"return": {"status": "running", "running": true}}`,
		"bogus":            `{"error": {"class": "CommandNotFound", "desc": "The command bogus has not been found"}}`,
	})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	q, err := dialQMP(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	ret, err := q.execute(ctx, "query-status", nil)
	if err != nil {
		t.Fatal(err)
	}
	var st struct{ Status string }
	if err := json.Unmarshal(ret, &st); err != nil || st.Status != "running" {
		t.Fatalf("query-status = %s, %v", ret, err)
	}
	_, err = q.execute(ctx, "bogus", nil)
	if err == nil || !strings.Contains(err.Error(), "CommandNotFound") {
		t.Fatalf("bogus command: err = %v", err)
	}
	q.close()
	got := <-seen
	if strings.Join(got, ",") != "qmp_capabilities,query-status,bogus" {
		t.Errorf("commands sent: %v", got)
	}
}

func TestQMPNoSocket(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := dialQMP(ctx, filepath.Join(t.TempDir(), "none.sock")); err == nil {
		t.Fatal("dial of a missing socket succeeded")
	}
}
