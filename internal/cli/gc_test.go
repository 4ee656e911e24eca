package cli

import (
	"log/slog"
	"runtime/debug"
	"testing"
)

func TestTuneGC(t *testing.T) {
	orig := debug.SetGCPercent(100)
	t.Cleanup(func() { debug.SetGCPercent(orig) })
	log := slog.New(slog.DiscardHandler)

	TuneGC(map[string]string{}, log)
	if got := debug.SetGCPercent(100); got != DefaultGCPercent {
		t.Errorf("GOGC unset: gc percent %d, want %d", got, DefaultGCPercent)
	}
	// GOGC set: the runtime already read it at start-up; TuneGC leaves it alone.
	TuneGC(map[string]string{"GOGC": "100"}, log)
	if got := debug.SetGCPercent(100); got != 100 {
		t.Errorf("GOGC=100: gc percent %d, want it left at 100", got)
	}
}
