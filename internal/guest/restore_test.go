package guest

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	agent "github.com/hullrt/hull/api/agent/v1"
)

// A bad Restored request is refused before the clock or the generator is
// touched (which would need root; this test does not).
func TestRestoredRefusesBadInput(t *testing.T) {
	now := timestamppb.New(time.Now())
	for name, r := range map[string]*agent.RestoredRequest{
		"no time":      {Entropy: make([]byte, 32)},
		"time at 0":    {Time: timestamppb.New(time.Unix(0, 0)), Entropy: make([]byte, 32)},
		"invalid time": {Time: &timestamppb.Timestamp{Seconds: 1, Nanos: -1}, Entropy: make([]byte, 32)},
		"no entropy":   {Time: now},
		"too little":   {Time: now, Entropy: make([]byte, minEntropy-1)},
		"too much":     {Time: now, Entropy: make([]byte, maxEntropy+1)},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := NewAgent().Restored(context.Background(), r)
			if status.Code(err) != codes.InvalidArgument {
				t.Fatalf("got %v, want InvalidArgument", err)
			}
		})
	}
}
