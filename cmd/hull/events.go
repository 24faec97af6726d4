package main

import (
	"encoding/json"
	"fmt"
	"os"
	"time"

	"github.com/urfave/cli/v2"

	agent "github.com/hullrt/hull/api/agent/v1"
)

// event is one line of `hull events`, in runc's shape.
type event struct {
	Type string `json:"type"`
	ID   string `json:"id"`
	Data any    `json:"data,omitempty"`
}

// stats is the data of a "stats" event, with runc's field names.
type stats struct {
	CPU struct {
		Usage struct {
			Total  uint64   `json:"total"`
			Percpu []uint64 `json:"percpu,omitempty"`
			Kernel uint64   `json:"kernel"`
			User   uint64   `json:"user"`
		} `json:"usage"`
		Throttling struct {
			ThrottledPeriods uint64 `json:"throttledPeriods,omitempty"`
			ThrottledTime    uint64 `json:"throttledTime,omitempty"`
		} `json:"throttling"`
	} `json:"cpu"`
	Memory struct {
		Cache uint64            `json:"cache,omitempty"`
		Usage memoryEntry       `json:"usage"`
		Swap  memoryEntry       `json:"swap"`
		Raw   map[string]uint64 `json:"raw,omitempty"`
	} `json:"memory"`
	Pids struct {
		Current uint64 `json:"current,omitempty"`
		Limit   uint64 `json:"limit,omitempty"`
	} `json:"pids"`
}

type memoryEntry struct {
	Limit   uint64 `json:"limit"`
	Usage   uint64 `json:"usage,omitempty"`
	Max     uint64 `json:"max,omitempty"`
	Failcnt uint64 `json:"failcnt"`
}

func toStats(r *agent.StatsContainerResponse) *stats {
	var s stats
	if c := r.GetCpu(); c != nil {
		s.CPU.Usage.Total, s.CPU.Usage.Percpu = c.UsageTotalNs, c.PerCpuNs
		s.CPU.Usage.Kernel, s.CPU.Usage.User = c.UsageKernelNs, c.UsageUserNs
		s.CPU.Throttling.ThrottledPeriods, s.CPU.Throttling.ThrottledTime = c.ThrottledPeriods, c.ThrottledTimeNs
	}
	if m := r.GetMemory(); m != nil {
		s.Memory.Cache, s.Memory.Raw = m.Cache, m.Raw
		s.Memory.Usage = memoryEntry{Limit: m.Limit, Usage: m.Usage, Max: m.MaxUsage, Failcnt: m.Failcnt}
		s.Memory.Swap = memoryEntry{Limit: m.SwapLimit, Usage: m.SwapUsage}
	}
	if p := r.GetPids(); p != nil {
		s.Pids.Current, s.Pids.Limit = p.Current, p.Limit
	}
	return &s
}

var eventsCommand = &cli.Command{
	Name:      "events",
	Usage:     "print container resource statistics, and OOM kills, as JSON events",
	ArgsUsage: "<container-id>",
	Flags: []cli.Flag{
		&cli.DurationFlag{Name: "interval", Value: 5 * time.Second, Usage: "time between stats events"},
		&cli.BoolFlag{Name: "stats", Usage: "print one stats event and exit"},
	},
	Action: func(c *cli.Context) error {
		cfg, id, err := setup(c)
		if err != nil {
			return err
		}
		if c.Duration("interval") <= 0 {
			return fmt.Errorf("interval must be positive")
		}
		client, err := liveAgent(cfg, id)
		if err != nil {
			return err
		}
		defer client.Close()
		enc := json.NewEncoder(os.Stdout)
		// OOM kills in the guest arrive as "oom" events, as runc's do.
		oom := make(chan struct{}, 1)
		if !c.Bool("stats") {
			go func() {
				for {
					victim, err := client.WaitOOM(c.Context)
					if err != nil {
						return // the container or its VM is gone
					}
					if victim == id {
						select {
						case oom <- struct{}{}:
						default:
						}
					}
				}
			}()
		}
		for {
			r, err := client.Stats(c.Context, id)
			if err != nil {
				if _, rerr := running(cfg, id); rerr != nil {
					return nil // the container is gone: the stream ends
				}
				return err
			}
			if err := enc.Encode(event{Type: "stats", ID: id, Data: toStats(r)}); err != nil {
				return err
			}
			if c.Bool("stats") {
				return nil
			}
			next := time.After(c.Duration("interval"))
			for waiting := true; waiting; {
				select {
				case <-next:
					waiting = false
				case <-oom:
					if err := enc.Encode(event{Type: "oom", ID: id}); err != nil {
						return err
					}
				case <-c.Context.Done():
					return nil
				}
			}
		}
	},
}
