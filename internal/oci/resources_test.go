package oci

import (
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

func TestMergeResources(t *testing.T) {
	limit, quota, period := int64(64<<20), int64(50000), uint64(100000)
	cur := &specs.LinuxResources{
		Memory: &specs.LinuxMemory{Limit: &limit},
		CPU:    &specs.LinuxCPU{Quota: &quota, Period: &period},
	}
	next, err := MergeResources(cur, []byte(`{"cpu":{"quota":200000},"pids":{"limit":30}}`))
	if err != nil {
		t.Fatal(err)
	}
	if *next.CPU.Quota != 200000 || *next.CPU.Period != period || *next.Memory.Limit != limit || next.Pids.Limit != 30 {
		t.Errorf("merged: cpu %+v memory %+v pids %+v", next.CPU, next.Memory, next.Pids)
	}
	if *cur.CPU.Quota != quota || cur.Pids != nil {
		t.Error("the current resources were changed")
	}
	if _, err := MergeResources(cur, []byte(`{"cpu":{"quota":"lots"}}`)); err == nil {
		t.Error("a quota that is not a number was accepted")
	}
	if next, err := MergeResources(nil, []byte(`{"memory":{"limit":1}}`)); err != nil || *next.Memory.Limit != 1 {
		t.Errorf("merge over nothing: %+v, %v", next, err)
	}
}
