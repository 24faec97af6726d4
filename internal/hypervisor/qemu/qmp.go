package qemu

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// qmp is a minimal client of the QEMU Machine Protocol: one command at a
// time, events are read and dropped.
type qmp struct {
	mu   sync.Mutex
	conn net.Conn
	r    *bufio.Reader
}

type qmpResponse struct {
	Return json.RawMessage `json:"return"`
	Error  *struct {
		Class string `json:"class"`
		Desc  string `json:"desc"`
	} `json:"error"`
	Event string          `json:"event"`
	Data  json.RawMessage `json:"data"`
	QMP   *struct {
		Version struct {
			QEMU struct{ Major, Minor, Micro int } `json:"qemu"`
		} `json:"version"`
	} `json:"QMP"`
}

// dialQMP connects to the QMP socket, retrying until ctx ends while QEMU
// creates it, and negotiates capabilities.
func dialQMP(ctx context.Context, path string) (*qmp, error) {
	var d net.Dialer
	var conn net.Conn
	for {
		var err error
		conn, err = d.DialContext(ctx, "unix", path)
		if err == nil {
			break
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("connecting to qmp %s: %w", path, errors.Join(ctx.Err(), err))
		case <-time.After(2 * time.Millisecond):
		}
	}
	q := &qmp{conn: conn, r: bufio.NewReader(conn)}
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
		defer conn.SetDeadline(time.Time{})
	}
	greeting, err := q.read()
	if err != nil || greeting.QMP == nil {
		conn.Close()
		return nil, fmt.Errorf("reading qmp greeting: %w", errors.Join(err, errors.New("no greeting")))
	}
	if _, err := q.execute(ctx, "qmp_capabilities", nil); err != nil {
		conn.Close()
		return nil, err
	}
	return q, nil
}

func (q *qmp) read() (*qmpResponse, error) {
	line, err := q.r.ReadBytes('\n')
	if err != nil {
		return nil, err
	}
	var resp qmpResponse
	if err := json.Unmarshal(line, &resp); err != nil {
		return nil, fmt.Errorf("decoding qmp message: %w", err)
	}
	return &resp, nil
}

// execute runs one QMP command and returns its "return" value.
func (q *qmp) execute(ctx context.Context, cmd string, args any) (json.RawMessage, error) {
	defer q.take(ctx)()
	b, err := request(cmd, args)
	if err != nil {
		return nil, err
	}
	if _, err := q.conn.Write(b); err != nil {
		return nil, fmt.Errorf("qmp %s: %w", cmd, err)
	}
	return q.reply(cmd)
}

// take holds the connection for one exchange, which ctx's deadline bounds;
// the function it returns lets go of it.
func (q *qmp) take(ctx context.Context) func() {
	q.mu.Lock()
	dl, ok := ctx.Deadline()
	if ok {
		_ = q.conn.SetDeadline(dl)
	}
	return func() {
		if ok {
			_ = q.conn.SetDeadline(time.Time{})
		}
		q.mu.Unlock()
	}
}

// request is the line that asks QEMU to run cmd with args (nil: none).
func request(cmd string, args any) ([]byte, error) {
	req := map[string]any{"execute": cmd}
	if args != nil {
		req["arguments"] = args
	}
	b, err := json.Marshal(req)
	return append(b, '\n'), err
}

// reply reads up to the answer to cmd, dropping events.
func (q *qmp) reply(cmd string) (json.RawMessage, error) {
	for {
		resp, err := q.read()
		if err != nil {
			return nil, fmt.Errorf("qmp %s: %w", cmd, err)
		}
		if resp.Event != "" {
			continue
		}
		if resp.Error != nil {
			return nil, fmt.Errorf("qmp %s: %s: %s", cmd, resp.Error.Class, resp.Error.Desc)
		}
		return resp.Return, nil
	}
}

// waitEvent reads QEMU's messages until an event called name whose data
// match accepts arrives. Only events sent after the last command's answer
// can be seen: execute drops those that come before it.
func (q *qmp) waitEvent(ctx context.Context, name string, match func(json.RawMessage) bool) error {
	defer q.take(ctx)()
	for {
		resp, err := q.read()
		if err != nil {
			return fmt.Errorf("qmp: waiting for %s: %w", name, err)
		}
		if resp.Event == name && match(resp.Data) {
			return nil
		}
	}
}

// sendFD hands QEMU a file descriptor under name (QMP getfd), for
// commands that take "fd:name".
func (q *qmp) sendFD(ctx context.Context, name string, f *os.File) error {
	uc, ok := q.conn.(*net.UnixConn)
	if !ok {
		return errors.New("qmp: passing a file needs a unix socket")
	}
	defer q.take(ctx)()
	b, err := request("getfd", map[string]string{"fdname": name})
	if err != nil {
		return err
	}
	if _, _, err := uc.WriteMsgUnix(b, unix.UnixRights(int(f.Fd())), nil); err != nil {
		return fmt.Errorf("qmp getfd: %w", err)
	}
	_, err = q.reply("getfd")
	return err
}

func (q *qmp) close() error { return q.conn.Close() }
