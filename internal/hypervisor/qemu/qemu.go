// Package qemu drives QEMU: it builds the command line for a hull VM, runs
// the process, and talks QMP to it. KVM is used when the host has it; TCG
// software emulation otherwise.
package qemu

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/hullrt/hull/internal/hypervisor"
)

// QEMU is one QEMU process running one VM.
type QEMU struct {
	vm      hypervisor.VM
	binary  string
	machine string

	cmd     *exec.Cmd
	adopted *hypervisor.Adopted // a VMM another process started (the pool)
	done    chan struct{}
	waitErr error
	qmp     *qmp
}

var _ hypervisor.Hypervisor = (*QEMU)(nil)

// New returns a driver for vm; binary "" finds qemu-system-x86_64 in PATH.
func New(binary, machine string, vm hypervisor.VM) *QEMU {
	if binary == "" {
		binary = "qemu-system-x86_64"
	}
	return &QEMU{vm: vm, binary: binary, machine: machine, done: make(chan struct{})}
}

// The ids of the agent's virtio-serial port and of its chardev.
const (
	agentPort    = "agentport"
	agentChardev = "agent"
)

// Microvm is QEMU's minimal machine: no PCI, no firmware tables to speak
// of, virtio devices on MMIO; it boots sooner than q35, and has no
// hot-plug.
const Microvm = "microvm"

// APICTimerHz is the rate of the local APIC timer QEMU emulates under TCG:
// its APIC counts the virtual clock's nanoseconds (a 1 GHz bus).
const APICTimerHz = 1_000_000_000

// device is the QEMU device name of a virtio device: on PCI, or on MMIO
// for a microvm.
func (q *QEMU) device(kind string) string {
	if q.machine == Microvm {
		return kind + "-device"
	}
	return kind + "-pci"
}

// Socket paths inside the VM's state directory.
func (q *QEMU) qmpSocket() string  { return filepath.Join(q.vm.StateDir, "qmp.sock") }
func (q *QEMU) ConsoleLog() string { return filepath.Join(q.vm.StateDir, "console.log") }
func (q *QEMU) vmmLog() string     { return filepath.Join(q.vm.StateDir, "qemu.log") }

// Args is QEMU's command line for the VM, without the binary.
func (q *QEMU) Args() []string {
	vm := q.vm
	mem := strconv.Itoa(vm.MemoryMiB) + "M"
	memArg := mem
	if vm.MaxMemoryMiB > vm.MemoryMiB {
		memArg = fmt.Sprintf("size=%s,slots=%d,maxmem=%dM", mem, memorySlots, vm.MaxMemoryMiB)
	}
	smp := strconv.Itoa(vm.VCPUs)
	if vm.MaxVCPUs > vm.VCPUs {
		smp += ",maxcpus=" + strconv.Itoa(vm.MaxVCPUs)
	}
	machine := q.machine + ",accel=" + string(vm.Accel)
	var accel []string
	if vm.Accel == hypervisor.AccelTCG && vm.TBSizeMiB > 0 {
		// The translation cache grows to QEMU's default of 1 GiB as code
		// is translated; its cap bounds the VMM's memory.
		machine = q.machine
		accel = []string{"-accel", fmt.Sprintf("tcg,tb-size=%d", vm.TBSizeMiB)}
	}
	cpu := "max"
	if vm.Accel == hypervisor.AccelKVM {
		cpu = "host"
	}
	needsSharedMem := false
	for _, fs := range vm.SharedFS {
		if fs.Kind == hypervisor.VirtioFS {
			needsSharedMem = true
		}
	}
	if needsSharedMem || vm.Template != nil {
		// vhost-user devices need guest RAM the daemon can map; a template
		// keeps its RAM in a file for clones to map.
		machine += ",memory-backend=mem"
	}
	args := []string{
		"-name", "hull-" + vm.ID,
		"-machine", machine,
		"-cpu", cpu,
		"-smp", smp,
		"-m", memArg,
		"-nodefaults", "-no-user-config", "-nographic", "-no-reboot",
		"-kernel", vm.Kernel,
		"-initrd", vm.Initrd,
		"-append", strings.Join(vm.KernelParams, " "),
		"-chardev", "file,id=console,path=" + q.ConsoleLog(),
		"-serial", "chardev:console",
		"-qmp", "unix:" + q.qmpSocket() + ",server=on,wait=off",
		"-qmp", "unix:" + ControlSocket(vm.StateDir) + ",server=on,wait=off",
	}
	args = append(args, accel...)
	if vm.FreePageReporting {
		args = append(args, "-device", q.device("virtio-balloon")+",id=balloon0,free-page-reporting=on")
	}
	if vm.Firmware != "" {
		args = append(args, "-bios", vm.Firmware)
	}
	switch {
	case vm.Template != nil:
		// A template writes its RAM through to the file; a clone's writes
		// stay its own (copy on write).
		share := "on"
		if vm.Template.Clone {
			share = "off"
			args = append(args, "-incoming", "defer")
		}
		args = append(args, "-object", "memory-backend-file,id=mem,size="+mem+",mem-path="+vm.Template.RAM+",share="+share)
	case needsSharedMem:
		args = append(args, "-object", "memory-backend-memfd,id=mem,size="+mem+",share=on")
	}
	switch vm.Channel {
	case hypervisor.ChannelVsock:
		args = append(args, "-device", fmt.Sprintf("%s,id=vsock0,guest-cid=%d", q.device("vhost-vsock"), vm.VsockCID))
	default:
		args = append(args,
			"-device", q.device("virtio-serial")+",id=serial0",
			"-chardev", "socket,id="+agentChardev+",path="+vm.ChannelSocket+",server=on,wait=off",
			"-device", "virtserialport,id="+agentPort+",chardev="+agentChardev+",name=agent.channel.0",
		)
	}
	for i, fs := range vm.SharedFS {
		id := fmt.Sprintf("fs%d", i)
		switch fs.Kind {
		case hypervisor.VirtioFS:
			args = append(args,
				"-chardev", "socket,id="+id+",path="+fs.Socket,
				"-device", q.device("vhost-user-fs")+",chardev="+id+",tag="+fs.Tag+",queue-size=1024",
			)
		case hypervisor.Virtio9P:
			args = append(args,
				"-fsdev", "local,id="+id+",path="+fs.Source+",security_model=passthrough,multidevs=remap",
				"-device", q.device("virtio-9p")+",fsdev="+id+",mount_tag="+fs.Tag,
			)
		}
	}
	for i, nic := range vm.NICs {
		// Inherited descriptors are numbered from 3, in NICs' order (Start).
		netdev := fmt.Sprintf("tap,id=net%d,fd=%d", i, 3+i)
		if vm.Accel == hypervisor.AccelKVM && hypervisor.VhostNetUsable() {
			netdev += ",vhost=on"
		}
		args = append(args,
			"-netdev", netdev,
			"-device", fmt.Sprintf("%s,netdev=net%d,mac=%s", q.device("virtio-net"), i, nic.MAC),
		)
	}
	if q.machine == "q35" {
		// Empty ports for hot-plug (blockdev.go), after every other device
		// so that those keep their slots. Each port needs a unique chassis.
		for i := 0; i < vm.HotplugPorts; i++ {
			args = append(args, "-device", fmt.Sprintf("pcie-root-port,id=%s%d,bus=pcie.0,chassis=%d", portPrefix, i, i+1))
		}
	}
	return args
}

// Start launches QEMU and connects to its QMP socket.
func (q *QEMU) Start(ctx context.Context) error {
	logf, err := os.OpenFile(q.vmmLog(), os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd := exec.Command(q.binary, q.Args()...)
	if q.vm.Nice > 0 {
		// Through nice(1), so that every thread QEMU makes inherits it.
		cmd = exec.Command("nice", append([]string{"-n", strconv.Itoa(q.vm.Nice), q.binary}, q.Args()...)...)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	for _, nic := range q.vm.NICs {
		cmd.ExtraFiles = append(cmd.ExtraFiles, nic.Tap)
	}
	// Its own process group: a ^C on the terminal reaches hull, which
	// decides what the VM gets, not QEMU directly. Pdeathsig: a VMM never
	// outlives a runtime that dies without cleaning up; except a pool's,
	// which lives on with whoever claims it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if q.vm.Detached {
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting %s: %w", q.binary, err)
	}
	q.cmd = cmd
	go func() {
		q.waitErr = cmd.Wait()
		close(q.done)
	}()
	qctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-q.done:
			cancel()
		case <-qctx.Done():
		}
	}()
	q.qmp, err = dialQMP(qctx, q.qmpSocket())
	if err != nil {
		select {
		case <-q.done:
			return fmt.Errorf("qemu exited at start: %s", q.lastLog())
		default:
		}
		_ = q.kill()
		return err
	}
	if t := q.vm.Template; t != nil && t.Clone {
		if err := q.restore(qctx); err != nil {
			_ = q.kill()
			return err
		}
	}
	return nil
}

// lastLog is QEMU's own last complaint, for error messages.
func (q *QEMU) lastLog() string {
	b, _ := os.ReadFile(q.vmmLog())
	s := strings.TrimSpace(string(b))
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		s = s[i+1:]
	}
	if s == "" {
		s = fmt.Sprint(q.waitErr)
	}
	return s
}

// ExitReason describes why QEMU exited, once Done is closed.
func (q *QEMU) ExitReason() string { return q.lastLog() }

// Adopt takes over the running QEMU process pid, started by another
// process (a pool) for vm, and connects to its QMP socket.
func Adopt(ctx context.Context, binary, machine string, vm hypervisor.VM, pid int) (*QEMU, error) {
	q := New(binary, machine, vm)
	a, err := hypervisor.Adopt(pid)
	if err != nil {
		return nil, err
	}
	q.adopted = a
	go func() {
		<-a.Done()
		close(q.done)
	}()
	if q.qmp, err = dialQMP(ctx, q.qmpSocket()); err != nil {
		_ = q.kill()
		return nil, err
	}
	return q, nil
}

// Release lets go of the VM, leaving QEMU running for another process to
// Adopt: it closes the QMP connection, which QEMU serves one at a time.
func (q *QEMU) Release() error { return q.closeQMP() }

func (q *QEMU) Pid() int {
	if q.adopted != nil {
		return q.adopted.Pid
	}
	if q.cmd == nil || q.cmd.Process == nil {
		return 0
	}
	return q.cmd.Process.Pid
}

func (q *QEMU) Done() <-chan struct{} { return q.done }

// Stop quits QEMU through QMP and kills it if it is still there after the
// grace period (or ctx's deadline, if sooner).
func (q *QEMU) Stop(ctx context.Context) error {
	if q.cmd == nil && q.adopted == nil {
		return nil
	}
	select {
	case <-q.done:
		return q.closeQMP()
	default:
	}
	if q.qmp != nil {
		qctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		_, _ = q.qmp.execute(qctx, "quit", nil)
		cancel()
	}
	grace := time.NewTimer(3 * time.Second)
	defer grace.Stop()
	select {
	case <-q.done:
	case <-grace.C:
		_ = q.kill()
	case <-ctx.Done():
		_ = q.kill()
	}
	return q.closeQMP()
}

func (q *QEMU) kill() error {
	if q.adopted != nil {
		if err := q.adopted.Signal(syscall.SIGKILL); err != nil {
			return err
		}
	} else if err := q.cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return err
	}
	<-q.done
	return nil
}

func (q *QEMU) closeQMP() error {
	if q.qmp == nil {
		return nil
	}
	err := q.qmp.close()
	q.qmp = nil
	return err
}
