// Command containerd-shim-hull-v2 is hull's containerd runtime v2 shim
// (`--runtime io.containerd.hull.v2`): one VM per pod.
package main

import (
	"context"

	"github.com/containerd/containerd/runtime/v2/shim"

	hullshim "github.com/hullrt/hull/internal/shim"
)

func main() { shim.RunManager(context.Background(), hullshim.NewManager("io.containerd.hull.v2")) }
