package cli

import (
	"log/slog"
	"runtime/debug"
)

// DefaultGCPercent is the GOGC the ingress and worker run with when GOGC is not set.
//
// Their live heap is a few MB, so Go's default (100: collect whenever the heap doubles)
// made them collect many times a second under load, and each cycle scans every goroutine
// stack (one per slot and per connection). At 400 the heap may grow to five times the live
// heap before a collection; with a live heap of a few MB that is tens of MB, for about a
// fifth less CPU per sync request (BENCHMARKS.md). A large live heap (many slots holding
// large answers) grows in proportion: set GOMEMLIMIT to the memory the process may use, and
// the runtime collects sooner as the heap approaches it. GOGC=100 restores Go's default.
const DefaultGCPercent = 400

// TuneGC applies DefaultGCPercent unless GOGC is set in environ, and logs the GC settings.
func TuneGC(environ map[string]string, log *slog.Logger) {
	if _, set := environ["GOGC"]; !set {
		debug.SetGCPercent(DefaultGCPercent)
	}
	pct := debug.SetGCPercent(-1) // read the setting back ...
	debug.SetGCPercent(pct)       // ... and restore it
	log.Info("garbage collector", "gogc", pct, "gomemlimit_bytes", debug.SetMemoryLimit(-1))
}
