package monitor

import (
	"encoding/json"
	"os"
	"time"

	"github.com/sirupsen/logrus"
)

// PhaseLogEnv names a file that receives each timed phase of a container's
// life as a JSON line, {"phase":"vmm","ns":61234567}: how `hull bench`
// breaks a run down. Phases are also logged at debug level.
const PhaseLogEnv = "HULL_PHASE_LOG"

// processStart is about when this process started: the config phase
// (flags, config, bundle) runs from it to the container's creation.
var processStart = time.Now()

// RecordPhase records a phase timed outside this package.
func RecordPhase(name string, d time.Duration) { recordPhase(name, d) }

func recordPhase(name string, d time.Duration) {
	logrus.Debugf("phase %-16s %v", name, d)
	path := os.Getenv(PhaseLogEnv)
	if path == "" {
		return
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		logrus.WithError(err).Warn("phase log")
		return
	}
	defer f.Close()
	b, _ := json.Marshal(struct {
		Phase string `json:"phase"`
		NS    int64  `json:"ns"`
	}{name, d.Nanoseconds()})
	_, _ = f.Write(append(b, '\n'))
}
