package worker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluicehq/sluice/pkg/jobs"
	"github.com/sluicehq/sluice/pkg/providers"
	"github.com/sluicehq/sluice/pkg/route"
	"github.com/sluicehq/sluice/pkg/secret"
	"github.com/sluicehq/sluice/pkg/store"
	"github.com/sluicehq/sluice/pkg/store/storetest"
	"github.com/sluicehq/sluice/pkg/tokens"
)

// TestAttemptOutcome_Issue14_3: each way an upstream call ends has one bounded label.
func TestAttemptOutcome_Issue14_3(t *testing.T) {
	t.Parallel()
	live := context.Background()
	timedOut, cancel := context.WithDeadlineCause(live, time.Now().Add(-time.Second), ErrJobTimeout)
	defer cancel()
	canceled, cancel2 := context.WithCancelCause(live)
	cancel2(ErrClientGone)
	prov := func(status int, err error) error {
		return &providers.Error{Provider: "openai", StatusCode: status, Err: err}
	}
	netErr := func(errno syscall.Errno) error {
		return prov(0, &net.OpError{Op: "read", Net: "tcp", Err: &os.SyscallError{Syscall: "read", Err: errno}})
	}
	tests := []struct {
		name string
		ctx  context.Context
		err  error
		want string
	}{
		{"success", live, nil, "ok"},
		{"rate limited", live, prov(http.StatusTooManyRequests, nil), "429"},
		{"bad request", live, prov(http.StatusBadRequest, nil), "4xx"},
		{"unauthorized", live, prov(http.StatusUnauthorized, nil), "4xx"},
		{"server error", live, prov(http.StatusBadGateway, nil), "5xx"},
		{"odd status", live, prov(799, nil), "5xx"},
		{"first byte", live, prov(0, providers.ErrFirstByte), "first_byte"},
		{"idle", live, prov(0, fmt.Errorf("read: %w", providers.ErrIdle)), "idle"},
		{"malformed", live, prov(0, providers.ErrBadResponse), "bad_response"},
		{"too large", live, prov(0, providers.ErrTooLarge), "bad_response"},
		{"refused", live, netErr(syscall.ECONNREFUSED), "refused"},
		{"reset", live, netErr(syscall.ECONNRESET), "reset"},
		{"cut mid-stream", live, prov(0, fmt.Errorf("%w: %w", providers.ErrTruncated, io.ErrUnexpectedEOF)), "reset"},
		{"network timeout", live, prov(0, context.DeadlineExceeded), "timeout"},
		{"job deadline", timedOut, prov(0, context.DeadlineExceeded), "timeout"},
		{"client gone", canceled, prov(0, context.Canceled), "canceled"},
		{"other", live, errors.New("something else"), "error"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := attemptOutcome(tt.ctx, tt.err); got != tt.want {
				t.Errorf("attemptOutcome(%v) = %q, want %q", tt.err, got, tt.want)
			}
		})
	}
}

// TestUsageCountedOnceAtSettlement_Issue14_4: the usage counters move when a settler applies
// an outcome, by the ledger's tokens and cost; an outcome of the same job delivered again
// (a redelivery, published under another message id) and one not charged add nothing; a
// model no channel serves is counted as "other"; per-key counters only with PerKey.
func TestUsageCountedOnceAtSettlement_Issue14_4(t *testing.T) {
	t.Parallel()
	for _, perKey := range []bool{false, true} {
		t.Run(fmt.Sprintf("per_key=%v", perKey), func(t *testing.T) {
			t.Parallel()
			db := storetest.New(t)
			ctx := t.Context()
			nc, js, stream, cons := outcomeQueue(t)
			for _, p := range []store.Price{{Model: "m", InputPerMTok: 1, OutputPerMTok: 2}, {Model: "made-up", InputPerMTok: 4, OutputPerMTok: 8}} {
				if err := db.Store.SetPrice(ctx, p); err != nil {
					t.Fatal(err)
				}
			}
			key, _, err := db.Store.CreateKey(ctx, store.KeyParams{Name: "usage"})
			if err != nil {
				t.Fatal(err)
			}
			now := time.Now()
			outcome := func(id, model string, charge bool) *store.Outcome {
				j := store.NewJob{ID: id, KeyID: key.ID, Endpoint: jobs.EndpointChat, Model: model, CreatedAt: now,
					Deadline: now.Add(time.Minute), Attempt: 1}
				return &store.Outcome{JobID: id, Status: store.StatusSucceeded, StatusCode: http.StatusOK,
					Response: []byte(`{"ok":true}`), Usage: &tokens.Usage{PromptTokens: 10, CompletionTokens: 20}, Charge: charge, Job: &j}
			}
			outs := jobs.NewOutcomes(nc, js, stream, 5*time.Second)
			for i, o := range []*store.Outcome{outcome("job_u1", "m", true), outcome("job_u2", "m", true),
				outcome("job_u3", "made-up", true), outcome("job_u4", "m", false)} {
				if _, err := outs.Publish(ctx, o); err != nil {
					t.Fatalf("publish %d: %v", i, err)
				}
			}
			reg := prometheus.NewRegistry()
			m := NewMetrics(reg, MetricsOptions{PerKey: perKey, KnownModelFunc: func(s string) bool { return s == "m" }})
			st := &settler{cons: cons, finish: db.Store.FinishJobs, nc: nc, log: slog.New(slog.DiscardHandler), max: 8,
				budget: 1 << 20, wait: 200 * time.Millisecond, ackWait: outcomeAckWait, usage: m.usage,
				keys: newKeyCheck(time.Minute, db.Store.KeyByID)}
			sctx, stop := context.WithCancel(ctx)
			var wg sync.WaitGroup
			wg.Go(func() { st.run(sctx) })
			defer func() { stop(); wg.Wait() }()
			drained := func() {
				t.Helper()
				deadline := time.Now().Add(20 * time.Second)
				for {
					if info, err := cons.Info(ctx); err == nil && info.NumPending == 0 && info.NumAckPending == 0 {
						return
					}
					if time.Now().After(deadline) {
						t.Fatal("outcomes not settled within 20s")
					}
					time.Sleep(20 * time.Millisecond)
				}
			}
			drained()
			// The first job's outcome again, as a redelivery after its settlement would bring it.
			data, err := jobs.EncodeOutcome(outcome("job_u1", "m", true))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := js.PublishMsg(ctx, &nats.Msg{Subject: "sluice.outcomes.job_u1", Data: data},
				jetstream.WithMsgID("job_u1-again")); err != nil {
				t.Fatal(err)
			}
			drained()

			rows, err := db.Pool.Query(ctx, `SELECT model, sum(prompt_tokens)::float8, sum(completion_tokens)::float8,
				sum(cost_usd)::float8 FROM usage_ledger GROUP BY model`)
			if err != nil {
				t.Fatal(err)
			}
			ledger := map[string][3]float64{}
			for rows.Next() {
				var model string
				var v [3]float64
				if err := rows.Scan(&model, &v[0], &v[1], &v[2]); err != nil {
					t.Fatal(err)
				}
				ledger[model] = v
			}
			if err := rows.Err(); err != nil {
				t.Fatal(err)
			}
			for label, model := range map[string]string{"m": "m", otherModel: "made-up"} {
				want := ledger[model]
				got := [3]float64{sample(t, reg, "sluice_usage_tokens_total", label, "input"),
					sample(t, reg, "sluice_usage_tokens_total", label, "output"),
					sample(t, reg, "sluice_usage_cost_usd_total", label)}
				if got[0] != want[0] || got[1] != want[1] || !near(got[2], want[2]) || want[0] == 0 {
					t.Errorf("model label %q: counted tokens in/out and cost %v, ledger (model %s) %v", label, got, model, want)
				}
			}
			if in := ledger["m"][0]; in != 20 {
				t.Errorf("ledger input tokens of m = %v, want 20 (two charged jobs, once each)", in)
			}
			if n := series(t, reg, "sluice_usage_tokens_total"); n != 4 {
				t.Errorf("sluice_usage_tokens_total has %d series, want 4 (m and other, input and output)", n)
			}
			families, err := reg.Gather()
			if err != nil {
				t.Fatal(err)
			}
			var keyed bool
			for _, f := range families {
				if f.GetName() == "sluice_usage_key_cost_usd_total" {
					keyed = true
					if v := f.GetMetric()[0].GetCounter().GetValue(); len(f.GetMetric()) != 1 || !near(v, 2*50/1e6+(40+160)/1e6) {
						t.Errorf("per-key cost %v over %d series, want the key's spend", v, len(f.GetMetric()))
					}
				}
			}
			if keyed != perKey {
				t.Errorf("per-key counters exported: %v, want %v", keyed, perKey)
			}
		})
	}
}

// sample is the value of the series of name in reg whose label values, in label-name order,
// are values; 0 if there is none.
func sample(t *testing.T, reg *prometheus.Registry, name string, values ...string) float64 {
	t.Helper()
	fs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fs {
		if f.GetName() != name {
			continue
		}
	next:
		for _, m := range f.GetMetric() {
			if len(m.GetLabel()) != len(values) {
				continue
			}
			for i, l := range m.GetLabel() {
				if l.GetValue() != values[i] {
					continue next
				}
			}
			if c := m.GetCounter(); c != nil {
				return c.GetValue()
			}
			return m.GetGauge().GetValue()
		}
	}
	return 0
}

// series is how many series of name reg has.
func series(t *testing.T, reg *prometheus.Registry, name string) int {
	t.Helper()
	fs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fs {
		if f.GetName() == name {
			return len(f.GetMetric())
		}
	}
	return 0
}

type staticChannels []store.Channel

func (c staticChannels) Channels(context.Context) ([]store.Channel, error) { return c, nil }

// TestCircuitGauge_Issue14_1: sluice_upstream_circuit_state has a series for every routed
// channel: 0 while closed (a Retry-After cool-down included), 2 once failures in a row
// opened the circuit, 0 again after a success.
func TestCircuitGauge_Issue14_1(t *testing.T) {
	t.Parallel()
	chs := staticChannels{
		{ID: "ch_a", Provider: "fake", Models: []string{"m"}, Enabled: true},
		{ID: "ch_b", Provider: "fake", Models: []string{"m", "n"}, Enabled: true},
		{ID: "ch_c", Provider: "fake", Models: []string{"n"}, Enabled: true},
	}
	r := route.NewRouter(chs, func(string, string, secret.Secret) (providers.Provider, error) { return nil, nil },
		slog.New(slog.DiscardHandler))
	if err := r.Refresh(t.Context()); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(newCircuitCollector(r))
	want := func(step string, a, b, c float64) {
		t.Helper()
		if n := series(t, reg, "sluice_upstream_circuit_state"); n != 3 {
			t.Errorf("%s: %d series, want 3", step, n)
		}
		for id, w := range map[string]float64{"ch_a": a, "ch_b": b, "ch_c": c} {
			if got := sample(t, reg, "sluice_upstream_circuit_state", id); got != w {
				t.Errorf("%s: state of %s = %v, want %v", step, id, got, w)
			}
		}
	}
	want("at start", 0, 0, 0)
	r.Failed("ch_c", time.Minute) // a 429's Retry-After: cooling, the circuit closed
	for range 8 {                 // the eighth opens it for 32 s: still open when read, however slow the box
		r.Failed("ch_a", 0)
	}
	want("after eight failures of a", 2, 0, 0)
	r.Succeeded("ch_a")
	want("after a success", 0, 0, 0)
}
