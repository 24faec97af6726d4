package agentclient

import (
	"context"
	"errors"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Sentinels for the kinds of agent errors callers act on.
var (
	ErrNotFound      = errors.New("not found")
	ErrAlreadyExists = errors.New("already exists")
	ErrInvalid       = errors.New("invalid argument")
	ErrTimeout       = errors.New("agent did not answer in time")
)

// rpcError is an agent error with the RPC framing taken off: its message is
// the agent's own, and it unwraps to the sentinel of its kind.
type rpcError struct {
	msg  string
	kind error
}

func (e *rpcError) Error() string { return e.msg }
func (e *rpcError) Unwrap() error { return e.kind }

// fromRPC converts a ttrpc status error into a plain one-line error.
func fromRPC(err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return &rpcError{msg: ErrTimeout.Error(), kind: ErrTimeout}
	}
	st, ok := status.FromError(err)
	if !ok {
		return err
	}
	var kind error
	switch st.Code() {
	case codes.NotFound:
		kind = ErrNotFound
	case codes.AlreadyExists:
		kind = ErrAlreadyExists
	case codes.InvalidArgument:
		kind = ErrInvalid
	case codes.DeadlineExceeded:
		return &rpcError{msg: ErrTimeout.Error(), kind: ErrTimeout}
	}
	return &rpcError{msg: st.Message(), kind: kind}
}
