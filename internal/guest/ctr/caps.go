package ctr

import (
	"strings"

	"github.com/moby/sys/capability"
	"github.com/opencontainers/runc/libcontainer/configs"
	"github.com/sirupsen/logrus"
)

// capByName maps "CAP_CHOWN" and the like to capability numbers.
var capByName = func() map[string]uint {
	m := map[string]uint{}
	for _, c := range capability.ListKnown() {
		m["CAP_"+strings.ToUpper(c.String())] = uint(c)
	}
	return m
}()

type capSets struct {
	bounding, effective, permitted, inheritable, ambient uint64
}

// capMasks turns capability names into masks; nil for nil. Names this
// build does not know are left out with a warning, as runc does.
func capMasks(c *configs.Capabilities) (*capSets, error) {
	if c == nil {
		return nil, nil
	}
	mask := func(names []string) uint64 {
		var m uint64
		for _, n := range names {
			bit, ok := capByName[strings.ToUpper(n)]
			if !ok || bit > 63 {
				logrus.Warnf("ignoring unknown capability %q", n)
				continue
			}
			m |= 1 << bit
		}
		return m
	}
	s := &capSets{
		bounding:    mask(c.Bounding),
		effective:   mask(c.Effective),
		permitted:   mask(c.Permitted),
		inheritable: mask(c.Inheritable),
		ambient:     mask(c.Ambient),
	}
	if lost := s.ambient &^ (s.permitted & s.inheritable); lost != 0 {
		// The kernel raises only these; runc warns about the rest too.
		logrus.Warnf("ignoring ambient capabilities %#x: not both permitted and inheritable", lost)
		s.ambient &^= lost
	}
	return s, nil
}
