package worker

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/sluicehq/sluice/pkg/jobs"
	"github.com/sluicehq/sluice/pkg/telemetry"
)

// TestJobLogAsWith_Issue10: the job logger, which adds the job's attributes only when a line
// is written, writes exactly what slog's With made them write (same keys, values and
// order), for plain lines, lines with attributes, and a logger derived with With and
// WithGroup; and a line below the level is not written.
func TestJobLogAsWith_Issue10(t *testing.T) {
	t.Parallel()
	noTime := func(_ []string, a slog.Attr) slog.Attr {
		if a.Key == slog.TimeKey {
			return slog.Attr{}
		}
		return a
	}
	job := &jobs.Job{ID: "job_1", KeyID: "key_\"q\"", Model: "gpt-4o-mini", Header: nats.Header{
		jobs.HeaderRequestID: {"req-7"}, telemetry.HeaderTraceparent: {"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}}}
	write := func(l *slog.Logger) {
		l.Info("plain")
		l.Debug("hidden")
		l.Warn("with attrs", "err", errors.New("boom"), "n", 3)
		l.With("channel_id", "ch_1").Error("derived")
		l.WithGroup("g").Info("grouped", "k", "v")
	}
	var lazy, eager bytes.Buffer
	p := &Pool{log: slog.New(slog.NewJSONHandler(&lazy, &slog.HandlerOptions{ReplaceAttr: noTime}))}
	write(p.jobLog(context.Background(), job, 2))
	base := slog.New(slog.NewJSONHandler(&eager, &slog.HandlerOptions{ReplaceAttr: noTime}))
	write(base.With("job_id", job.ID, "request_id", "req-7", "trace_id", "4bf92f3577b34da6a3ce929d0e0e4736",
		"key_id", job.KeyID, "model", job.Model, "attempt", uint64(2)))
	if lazy.String() != eager.String() {
		t.Fatalf("job logger wrote\n%s\nslog's With writes\n%s", lazy.String(), eager.String())
	}
	if n := bytes.Count(lazy.Bytes(), []byte("\n")); n != 4 {
		t.Fatalf("%d lines written, want 4", n)
	}
}
