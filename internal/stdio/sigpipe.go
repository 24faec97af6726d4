package stdio

import (
	"os"
	"os/signal"
	"sync"
	"syscall"
)

var catchSIGPIPE sync.Once

// CatchSIGPIPE makes a write to a stdout or stderr whose reader went away
// fail with EPIPE, where by Go's default it kills the process with
// SIGPIPE: a runtime relaying a container's output (`hull run ... |
// head`) must live on to close the guest's stream, reap the container
// and remove what it set up. The signal is caught, not ignored, so that
// the processes it starts keep SIGPIPE's default action (an ignored
// signal stays ignored across exec: a build or a container would then
// loop on EPIPE where it should die).
func CatchSIGPIPE() {
	catchSIGPIPE.Do(func() {
		// Nobody reads the channel: what matters is that SIGPIPE is
		// notified, which turns the runtime's exit into an EPIPE.
		signal.Notify(make(chan os.Signal, 1), syscall.SIGPIPE)
	})
}
