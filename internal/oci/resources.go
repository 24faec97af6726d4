package oci

import (
	"encoding/json"
	"fmt"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// MergeResources applies update, OCI LinuxResources as JSON in which only
// the fields set change anything (what `update` and containerd's
// UpdateTask carry), over cur, and returns the result; cur is not changed.
func MergeResources(cur *specs.LinuxResources, update []byte) (*specs.LinuxResources, error) {
	next := &specs.LinuxResources{}
	if cur != nil {
		b, err := json.Marshal(cur)
		if err != nil {
			return nil, err
		}
		if err := json.Unmarshal(b, next); err != nil {
			return nil, err
		}
	}
	if err := json.Unmarshal(update, next); err != nil {
		return nil, fmt.Errorf("decoding resources: %w", err)
	}
	return next, nil
}
