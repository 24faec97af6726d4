package guest

import (
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"

	agent "github.com/hullrt/hull/api/agent/v1"
)

// Bounds of RestoredRequest.entropy: the kernel's generator takes 256 bits
// to reseed; more than 512 bytes adds nothing.
const (
	minEntropy = 32
	maxEntropy = 512
)

// The random(4) ioctls, as <linux/random.h> numbers them on x86.
const (
	rndAddEntropy = 0x40085203 // _IOW('R', 0x03, int[2])
	rndReseedCRNG = 0x5207     // _IO('R', 0x07)
)

// Restored sets the clock and reseeds the random number generator of a VM
// started from a template, then warms the container path up if asked.
func (a *Agent) Restored(ctx context.Context, r *agent.RestoredRequest) (*emptypb.Empty, error) {
	if err := r.GetTime().CheckValid(); err != nil || r.GetTime().AsTime().Unix() <= 0 {
		return nil, status.Errorf(codes.InvalidArgument, "restored: invalid time %v", r.GetTime())
	}
	if n := len(r.GetEntropy()); n < minEntropy || n > maxEntropy {
		return nil, status.Errorf(codes.InvalidArgument, "restored: %d bytes of entropy, want %d to %d", n, minEntropy, maxEntropy)
	}
	ts := unix.NsecToTimespec(r.GetTime().AsTime().UnixNano())
	if err := unix.ClockSettime(unix.CLOCK_REALTIME, &ts); err != nil {
		return nil, status.Errorf(codes.Internal, "setting the clock: %v", err)
	}
	if err := reseed(r.GetEntropy()); err != nil {
		return nil, status.Errorf(codes.Internal, "reseeding the random number generator: %v", err)
	}
	if r.GetWarm() {
		a.warm()
	}
	return &emptypb.Empty{}, nil
}

// reseed mixes b into the kernel's input pool, credited as entropy (the
// host's generator is trusted as much as the guest's boot seed is), and
// has the generator reseed from the pool now rather than at its next
// interval: what a clone reads from /dev/urandom then differs from what
// its template and its siblings read.
func reseed(b []byte) error {
	f, err := os.OpenFile("/dev/urandom", os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	// struct rand_pool_info { int entropy_count; int buf_size; __u32 buf[]; }
	info := make([]byte, 8+len(b))
	binary.NativeEndian.PutUint32(info[0:], uint32(8*len(b)))
	binary.NativeEndian.PutUint32(info[4:], uint32(len(b)))
	copy(info[8:], b)
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, f.Fd(), rndAddEntropy, uintptr(unsafe.Pointer(&info[0]))); errno != 0 {
		return fmt.Errorf("RNDADDENTROPY: %w", errno)
	}
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, f.Fd(), rndReseedCRNG, 0); errno != 0 {
		return fmt.Errorf("RNDRESEEDCRNG: %w", errno)
	}
	return nil
}
