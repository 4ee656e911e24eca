package worker

import (
	"context"
	"errors"
	"testing"

	"github.com/sluicehq/sluice/pkg/jobs"
	"github.com/sluicehq/sluice/pkg/providers"
	"github.com/sluicehq/sluice/pkg/store"
	"github.com/sluicehq/sluice/pkg/tokens"
)

// TestCancelChargesWhatTheUpstreamProduced_Issue9_1: every cancel of a running job is charged
// the same way — reported usage, or an estimate once the upstream had streamed something — so a
// caller who stalls a stream (the ingress then cancels it) or cancels through the API does not
// get output free; a job cancelled before its upstream answered anything costs nothing.
func TestCancelChargesWhatTheUpstreamProduced_Issue9_1(t *testing.T) {
	t.Parallel()
	job := &jobs.Job{ID: "job_1", Body: []byte(`{"model":"m","messages":[{"role":"user","content":"hello there"}]}`), Stream: true}
	reported := &providers.Result{Usage: &tokens.Usage{PromptTokens: 7, CompletionTokens: 3}}
	tests := []struct {
		name      string
		cause     error
		res       *providers.Result
		emitted   int
		wantCode  string
		wantUsage bool // charged at all
		estimated bool
	}{
		{"api cancel mid-stream, no usage reported", ErrCanceled, nil, 5, "job_canceled", true, true},
		{"api cancel with reported usage", ErrCanceled, reported, 5, "job_canceled", true, false},
		{"api cancel before any output", ErrCanceled, nil, 0, "job_canceled", false, false},
		{"client gone mid-stream", ErrClientGone, nil, 5, "client_closed_request", true, true},
		{"client gone before any output", ErrClientGone, nil, 0, "client_closed_request", false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithCancelCause(context.Background())
			cancel(tt.cause)
			o := ended(ctx, job, tt.res, tt.emitted, "ch_1")
			if o.status != store.StatusCanceled || o.err == nil || o.err.Code != tt.wantCode {
				t.Fatalf("outcome %+v, want canceled with %s", o, tt.wantCode)
			}
			if o.charge != tt.wantUsage || (o.usage != nil) != tt.wantUsage {
				t.Fatalf("charge %v usage %+v, want charged=%v", o.charge, o.usage, tt.wantUsage)
			}
			if tt.wantUsage && o.usage.Estimated != tt.estimated {
				t.Errorf("usage %+v, want estimated=%v", o.usage, tt.estimated)
			}
			if tt.wantUsage && !tt.estimated && (o.usage.PromptTokens != 7 || o.usage.CompletionTokens != 3) {
				t.Errorf("usage %+v, want the reported 7+3", o.usage)
			}
			if tt.estimated && o.usage.CompletionTokens != int64(tt.emitted) {
				t.Errorf("estimated completion %d, want one token per emitted chunk (%d)", o.usage.CompletionTokens, tt.emitted)
			}
		})
	}
}

// TestEndedTimeoutAndShutdown: a deadline or a shutdown is charged only reported usage.
func TestEndedTimeoutAndShutdown(t *testing.T) {
	t.Parallel()
	job := &jobs.Job{ID: "job_1", Body: []byte(`{}`), Stream: true}
	for _, cause := range []error{ErrJobTimeout, ErrShutdown} {
		ctx, cancel := context.WithCancelCause(context.Background())
		cancel(cause)
		o := ended(ctx, job, nil, 4, "ch_1")
		if o.status != store.StatusFailed || o.charge || o.usage != nil {
			t.Errorf("%v: outcome %+v, want failed and uncharged without reported usage", cause, o)
		}
		wantCode := map[error]string{ErrJobTimeout: "job_timeout", ErrShutdown: "worker_shutdown"}[cause]
		if o.err == nil || o.err.Code != wantCode || !errors.Is(context.Cause(ctx), cause) {
			t.Errorf("%v: error %+v, want %s", cause, o.err, wantCode)
		}
	}
}
