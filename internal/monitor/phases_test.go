package monitor

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestRecordPhase(t *testing.T) {
	p := filepath.Join(t.TempDir(), "phases")
	t.Setenv(PhaseLogEnv, p)
	recordPhase("vmm", 61*time.Millisecond)
	recordPhase("teardown", time.Second)
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"phase":"vmm","ns":61000000}` + "\n" + `{"phase":"teardown","ns":1000000000}` + "\n"; string(b) != want {
		t.Errorf("phase log:\n%s\nwant:\n%s", b, want)
	}
	// The name bench reads it under.
	src, err := os.ReadFile("../bench/phases.go")
	if err != nil || !strings.Contains(string(src), `phaseLogEnv = "`+PhaseLogEnv+`"`) {
		t.Errorf("internal/bench does not read %s", PhaseLogEnv)
	}
}
