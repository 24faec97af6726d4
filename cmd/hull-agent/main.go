// Command hull-agent is the guest agent: PID 1 of every hull VM. It serves
// the agent API to the host and runs the containers of its sandbox. When
// re-executed as "hull-init" it is the containers' init (package cinit,
// which takes over before the Go runtime starts).
package main

import (
	"fmt"
	"os"
	"time"

	"github.com/hullrt/hull/internal/guest"
	_ "github.com/hullrt/hull/internal/guest/ctr/cinit"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "--version" {
		fmt.Println("hull-agent", guest.Version)
		return
	}
	err := guest.Main()
	fmt.Fprintf(os.Stderr, "hull-agent: %v\n", err)
	if os.Getpid() == 1 {
		// Give the console a moment to carry the message out before the
		// kernel panics on init's exit and the VMM stops.
		time.Sleep(100 * time.Millisecond)
	}
	os.Exit(1)
}
