package sandbox

import (
	"context"
	"errors"

	"github.com/hullrt/hull/internal/hostcgroup"
)

// WithCgroup puts the sandbox's host processes in the cgroup that
// cgroupsPath, the spec's linux.cgroupsPath, names (cgroupfs or systemd
// form): the calling process, which owns the sandbox, joins it before the
// first helper starts, so that virtiofsd and the VMM are born in it; it
// leaves again when the sandbox is destroyed, and removes the cgroup if
// Create made it. "" (or runtime.sandbox_cgroup = false) leaves every
// process where it is.
func WithCgroup(cgroupsPath string) Opt {
	return func(s *Sandbox) { s.cgroupsPath = cgroupsPath }
}

// checkCgroupPath validates the cgroup path before anything is made.
func (s *Sandbox) checkCgroupPath() error {
	if s.cgroupsPath == "" || !s.cfg.Runtime.SandboxCgroup {
		s.cgroupsPath = ""
		return nil
	}
	p, err := hostcgroup.ParsePath(s.cgroupsPath)
	if err != nil {
		return err
	}
	s.cgroupsPath = p
	return nil
}

// joinCgroup creates the sandbox's cgroup, records it for Cleanup, and
// moves this process into it.
func (s *Sandbox) joinCgroup(context.Context) error {
	if s.cgroupsPath == "" {
		return nil
	}
	cg, err := hostcgroup.Create(s.cgroupsPath)
	if err != nil {
		return err
	}
	s.cg = cg
	if err := cg.Save(s.Dir); err != nil {
		return err
	}
	return cg.Join()
}

// leaveCgroup moves this process back out of the sandbox's cgroup and
// removes the cgroup if Create made it; the VMM and helpers have exited.
func (s *Sandbox) leaveCgroup() error {
	if s.cg == nil {
		return nil
	}
	err := errors.Join(s.cg.Leave(), s.cg.Remove())
	s.cg = nil
	return err
}
