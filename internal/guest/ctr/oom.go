package ctr

import (
	"fmt"
	"path/filepath"
	"unsafe"

	"github.com/opencontainers/runc/libcontainer/cgroups/fscommon"
	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"
)

// NotifyOOM returns a channel that receives a value each time the OOM
// killer kills in the container's cgroup. It is closed once the cgroup
// has no process left or goes away.
func (c *Container) NotifyOOM() (<-chan struct{}, error) {
	dir := c.cg.Path("")
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("inotify: %w", err)
	}
	events, err := unix.InotifyAddWatch(fd, filepath.Join(dir, "memory.events"), unix.IN_MODIFY)
	if err == nil {
		_, err = unix.InotifyAddWatch(fd, filepath.Join(dir, "cgroup.events"), unix.IN_MODIFY)
	}
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("watching %s: %w", dir, err)
	}
	ch := make(chan struct{}, 1)
	go func() {
		defer close(ch)
		defer unix.Close(fd)
		var seen uint64
		var buf [unix.SizeofInotifyEvent + unix.PathMax + 1]byte
		for {
			n, err := unix.Read(fd, buf[:])
			if err == unix.EINTR {
				continue
			}
			if err != nil {
				logrus.WithError(err).Warnf("reading OOM events of %s", dir)
				return
			}
			for off := 0; off+unix.SizeofInotifyEvent <= n; {
				ev := (*unix.InotifyEvent)(unsafe.Pointer(&buf[off]))
				off += unix.SizeofInotifyEvent + int(ev.Len)
				if ev.Mask&unix.IN_IGNORED != 0 {
					return // the cgroup went away
				}
				if int(ev.Wd) == events {
					if kills, err := fscommon.GetValueByKey(dir, "memory.events", "oom_kill"); err == nil && kills > seen {
						seen = kills
						select {
						case ch <- struct{}{}:
						default:
						}
					}
				} else if populated, err := fscommon.GetValueByKey(dir, "cgroup.events", "populated"); err != nil || populated == 0 {
					return
				}
			}
		}
	}()
	return ch, nil
}
