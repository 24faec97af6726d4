package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strconv"

	"github.com/docker/go-units"
	"github.com/hullrt/hull/internal/oci"
	"github.com/hullrt/hull/internal/sandbox"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/urfave/cli/v2"
)

var updateCommand = &cli.Command{
	Name:  "update",
	Usage: "change the resource limits of a running container",
	Description: "The limits apply to the container's cgroup in the guest. The VM grows with\n" +
		"them: CPUs (--cpus, or --cpu-quota over --cpu-period) and memory (--memory)\n" +
		"beyond what it has are hot-plugged and brought online before update returns.\n" +
		"The VM never shrinks: lower limits only tighten the cgroup.",
	ArgsUsage: "<container-id>",
	Flags: []cli.Flag{
		&cli.StringFlag{Name: "resources", Aliases: []string{"r"}, Usage: "path to a JSON file of OCI linux.resources (\"-\" for stdin)"},
		&cli.StringFlag{Name: "memory", Usage: "memory limit (e.g. 256m); -1 for none"},
		&cli.StringFlag{Name: "memory-swap", Usage: "memory plus swap limit"},
		&cli.StringFlag{Name: "memory-reservation", Usage: "memory soft limit"},
		&cli.StringFlag{Name: "cpus", Usage: "number of CPUs (e.g. 0.5), sets quota over a 100ms period"},
		&cli.StringFlag{Name: "cpu-quota", Usage: "CPU CFS quota in microseconds"},
		&cli.StringFlag{Name: "cpu-period", Usage: "CPU CFS period in microseconds"},
		&cli.StringFlag{Name: "cpu-share", Usage: "CPU shares"},
		&cli.StringFlag{Name: "cpuset-cpus", Usage: "CPUs to use"},
		&cli.StringFlag{Name: "cpuset-mems", Usage: "memory nodes to use"},
		&cli.Int64Flag{Name: "pids-limit", Usage: "maximum number of pids"},
	},
	Action: func(c *cli.Context) error {
		cfg, id, err := setup(c)
		if err != nil {
			return err
		}
		r, err := updateResources(c)
		if err != nil {
			return err
		}
		raw, err := json.Marshal(r)
		if err != nil {
			return err
		}
		// Locked: concurrent updates of one container add up in order.
		h, err := rootOf(cfg).Open(id)
		if err != nil {
			return err
		}
		defer h.Close()
		if h.Spec == nil || h.Spec.Linux == nil {
			return fmt.Errorf("container %s has no linux section in its spec", id)
		}
		next, err := oci.MergeResources(h.Spec.Linux.Resources, raw)
		if err != nil {
			return err
		}
		client, err := liveAgent(cfg, id)
		if err != nil {
			return err
		}
		defer client.Close()
		// The guest checks and applies the limits first: what it refuses
		// changes nothing, in the guest or in the VM's size.
		if err := client.Update(c.Context, id, raw); err != nil {
			return err
		}
		h.Spec.Linux.Resources = next
		if err := h.Save(); err != nil {
			return err
		}
		vmcfg, err := cfg.WithAnnotations(h.Spec.Annotations)
		if err != nil {
			return err
		}
		_, err = sandbox.Grow(c.Context, vmcfg, rootOf(cfg).SandboxDir(id), client, next)
		return err
	},
}

// updateResources reads -r and applies the flags over it.
func updateResources(c *cli.Context) (*specs.LinuxResources, error) {
	r := &specs.LinuxResources{}
	if path := c.String("resources"); path != "" {
		var b []byte
		var err error
		if path == "-" {
			b, err = io.ReadAll(os.Stdin)
		} else {
			b, err = os.ReadFile(path)
		}
		if err != nil {
			return nil, fmt.Errorf("reading resources: %w", err)
		}
		if err := json.Unmarshal(b, r); err != nil {
			return nil, fmt.Errorf("parsing resources: %w", err)
		}
	}
	mem := func(flag string, dst **int64) error {
		v := c.String(flag)
		if v == "" {
			return nil
		}
		n := int64(-1)
		if v != "-1" {
			var err error
			if n, err = units.RAMInBytes(v); err != nil || n <= 0 {
				return fmt.Errorf("invalid value for --%s: %q", flag, v)
			}
		}
		*dst = &n
		return nil
	}
	if r.Memory == nil {
		r.Memory = &specs.LinuxMemory{}
	}
	if r.CPU == nil {
		r.CPU = &specs.LinuxCPU{}
	}
	for flag, dst := range map[string]**int64{"memory": &r.Memory.Limit, "memory-swap": &r.Memory.Swap, "memory-reservation": &r.Memory.Reservation} {
		if err := mem(flag, dst); err != nil {
			return nil, err
		}
	}
	uintFlag := func(flag string) (*uint64, error) {
		v := c.String(flag)
		if v == "" {
			return nil, nil
		}
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("invalid value for --%s: %q", flag, v)
		}
		return &n, nil
	}
	if p, err := uintFlag("cpu-period"); err != nil {
		return nil, err
	} else if p != nil {
		r.CPU.Period = p
	}
	if p, err := uintFlag("cpu-share"); err != nil {
		return nil, err
	} else if p != nil {
		r.CPU.Shares = p
	}
	if v := c.String("cpu-quota"); v != "" {
		q, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("invalid value for --cpu-quota: %q", v)
		}
		r.CPU.Quota = &q
	}
	if v := c.String("cpus"); v != "" {
		cpus, perr := strconv.ParseFloat(v, 64)
		if perr != nil || cpus <= 0 || cpus > 1024 {
			return nil, fmt.Errorf("invalid value for --cpus: %q", v)
		}
		period := uint64(100000)
		quota := int64(cpus * float64(period))
		r.CPU.Period, r.CPU.Quota = &period, &quota
	}
	if v := c.String("cpuset-cpus"); v != "" {
		r.CPU.Cpus = v
	}
	if v := c.String("cpuset-mems"); v != "" {
		r.CPU.Mems = v
	}
	if c.IsSet("pids-limit") {
		r.Pids = &specs.LinuxPids{Limit: c.Int64("pids-limit")}
	}
	return r, nil
}
