package guest

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/opencontainers/runc/libcontainer/specconv"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"

	agent "github.com/hullrt/hull/api/agent/v1"
	"github.com/hullrt/hull/internal/oci"
)

func (a *Agent) ListProcesses(ctx context.Context, r *agent.ListProcessesRequest) (*agent.ListProcessesResponse, error) {
	c, err := a.container(r.ContainerId)
	if err != nil {
		return nil, err
	}
	pids, err := c.c.Processes()
	if err != nil {
		return nil, fmt.Errorf("listing processes: %w", err)
	}
	resp := &agent.ListProcessesResponse{}
	for _, pid := range pids {
		if p, err := readProcess(pid); err == nil {
			resp.Processes = append(resp.Processes, p)
		}
	}
	return resp, nil
}

// readProcess describes pid from /proc.
func readProcess(pid int) (*agent.ProcessInfo, error) {
	dir := "/proc/" + strconv.Itoa(pid)
	stat, err := os.ReadFile(dir + "/stat")
	if err != nil {
		return nil, err
	}
	// "pid (comm) S ppid ...": comm may hold spaces and parentheses.
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return nil, fmt.Errorf("malformed %s/stat", dir)
	}
	fields := strings.Fields(string(stat[i+1:]))
	if len(fields) < 2 {
		return nil, fmt.Errorf("malformed %s/stat", dir)
	}
	ppid, _ := strconv.Atoi(fields[1])
	p := &agent.ProcessInfo{Pid: int32(pid), Ppid: int32(ppid), State: fields[0]}
	if st, err := os.ReadFile(dir + "/status"); err == nil {
		for _, l := range strings.Split(string(st), "\n") {
			if v, ok := strings.CutPrefix(l, "Uid:"); ok {
				if f := strings.Fields(v); len(f) > 0 {
					uid, _ := strconv.ParseUint(f[0], 10, 32)
					p.Uid = uint32(uid)
				}
			}
		}
	}
	if cmd, err := os.ReadFile(dir + "/cmdline"); err == nil && len(cmd) > 0 {
		p.Args = strings.Split(strings.TrimRight(string(cmd), "\x00"), "\x00")
	} else {
		// Kernel threads and zombies have no command line: use comm.
		j := bytes.IndexByte(stat, '(')
		p.Args = []string{"[" + string(stat[j+1:i]) + "]"}
	}
	return p, nil
}

func (a *Agent) PauseContainer(ctx context.Context, r *agent.PauseContainerRequest) (*emptypb.Empty, error) {
	c, err := a.container(r.ContainerId)
	if err != nil {
		return nil, err
	}
	if err := c.c.Pause(); err != nil {
		return nil, status.Errorf(codes.FailedPrecondition, "pausing container %s: %v", r.ContainerId, err)
	}
	return empty, nil
}

func (a *Agent) ResumeContainer(ctx context.Context, r *agent.ResumeContainerRequest) (*emptypb.Empty, error) {
	c, err := a.container(r.ContainerId)
	if err != nil {
		return nil, err
	}
	if err := c.c.Resume(); err != nil {
		return nil, status.Errorf(codes.FailedPrecondition, "resuming container %s: %v", r.ContainerId, err)
	}
	return empty, nil
}

// UpdateContainer changes the container's cgroup limits. The request's
// resources are merged into the spec the container was created with, so
// fields it leaves out keep their values.
func (a *Agent) UpdateContainer(ctx context.Context, r *agent.UpdateContainerRequest) (*emptypb.Empty, error) {
	c, err := a.container(r.ContainerId)
	if err != nil {
		return nil, err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	next, err := oci.MergeResources(c.spec.Linux.Resources, r.Resources)
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	spec := *c.spec
	linux := *spec.Linux
	linux.Resources = next
	spec.Linux = &linux
	cg, err := specconv.CreateCgroupConfig(&specconv.CreateOpts{CgroupName: r.ContainerId, Spec: &spec}, nil)
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "resources: %v", err)
	}
	nr := cg.Resources
	nr.Devices = c.c.Config().Cgroups.Resources.Devices // device rules are not updatable
	if err := c.c.Set(nr); err != nil {
		return nil, status.Errorf(codes.FailedPrecondition, "updating container %s: %v", r.ContainerId, err)
	}
	c.spec = &spec
	return empty, nil
}

func (a *Agent) StatsContainer(ctx context.Context, r *agent.StatsContainerRequest) (*agent.StatsContainerResponse, error) {
	c, err := a.container(r.ContainerId)
	if err != nil {
		return nil, err
	}
	st, err := c.c.Stats()
	if err != nil {
		return nil, fmt.Errorf("reading stats of %s: %w", r.ContainerId, err)
	}
	cs := st
	cpu := cs.CpuStats
	mem := cs.MemoryStats
	return &agent.StatsContainerResponse{
		Cpu: &agent.CPUStats{
			UsageTotalNs:     cpu.CpuUsage.TotalUsage,
			UsageUserNs:      cpu.CpuUsage.UsageInUsermode,
			UsageKernelNs:    cpu.CpuUsage.UsageInKernelmode,
			PerCpuNs:         cpu.CpuUsage.PercpuUsage,
			ThrottledPeriods: cpu.ThrottlingData.ThrottledPeriods,
			ThrottledTimeNs:  cpu.ThrottlingData.ThrottledTime,
		},
		Memory: &agent.MemoryStats{
			Usage:     mem.Usage.Usage,
			MaxUsage:  mem.Usage.MaxUsage,
			Limit:     mem.Usage.Limit,
			Failcnt:   mem.Usage.Failcnt,
			Cache:     mem.Cache,
			SwapUsage: mem.SwapUsage.Usage,
			SwapLimit: mem.SwapUsage.Limit,
			OomKill:   mem.Stats["oom_kill"],
			Raw:       mem.Stats,
		},
		Pids: &agent.PidsStats{Current: cs.PidsStats.Current, Limit: cs.PidsStats.Limit},
	}, nil
}
