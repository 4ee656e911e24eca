package providertest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/pkg/providers"
	"github.com/sluicehq/sluice/pkg/tokens"
)

// The conformance suite's cases: each starts its own Upstream and adapter, makes its calls
// and checks what comes back against the Provider contract.

// fixture is one case's upstream and adapter.
type fixture struct {
	u   *Upstream
	srv *httptest.Server
	p   providers.Provider
}

// start serves a fresh Upstream and builds an adapter for it. Its cleanup checks that every
// connection that carried a request closes once the server stops keeping idle ones alive:
// one that stays open is a response the adapter never released (or a handler still writing
// to it). See released for the connections it leaves to srv.Close.
func (s *suite) start(t *testing.T, cfg Config) *fixture {
	t.Helper()
	cfg.RetryAfter = int(retryAfter / time.Second)
	if cfg.BigBytes == 0 {
		cfg.BigBytes = 1 << 20
	}
	if cfg.DripInterval == 0 {
		cfg.DripInterval = 50 * time.Microsecond
	}
	u, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(s.wrap(u))
	srv.Config.ConnState = u.ConnState
	srv.Start()
	t.Cleanup(func() {
		u.Close()
		srv.Close()
	})
	f := &fixture{u: u, srv: srv, p: s.newAdapter(srv.URL)}
	t.Cleanup(func() {
		srv.Config.SetKeepAlivesEnabled(false) // closes idle connections, and the rest when done
		waitFor(t, "every upstream connection that carried a request to close", func() bool { return released(u.Stats()) })
	})
	return f
}

// released reports whether every upstream connection that carried a request has closed.
// A connection that never carried one holds no response, and is no leak: the client's
// transport dials one for a request whose deadline passes before the dial completes (the
// hang cases' 100ms, on a busy machine), then keeps it idle in its pool. The server does not
// close it on SetKeepAlivesEnabled(false) either (net/http takes a connection with no
// request yet for idle only after 5 s), so waiting for it would fail; srv.Close closes it.
func released(st Stats) bool { return st.OpenConns-st.UnusedConns == 0 }

// waitFor polls cond until it holds, failing t after ten seconds.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	deadline := time.NewTimer(10 * time.Second)
	defer deadline.Stop()
	for !cond() {
		select {
		case <-tick.C:
		case <-deadline.C:
			t.Errorf("timed out waiting for %s", what)
			return
		}
	}
}

// request builds the request for c in the suite's client API.
func (s *suite) request(c call) *providers.Request {
	model := "fake-model"
	if c.mode != "" {
		model += ":" + string(c.mode)
	}
	var body map[string]any
	switch s.endpoint {
	case EndpointResponses:
		body = responsesBody(model, c)
	case EndpointChat:
		body = map[string]any{"model": model, "messages": []map[string]any{
			{"role": "system", "content": systemText}, {"role": "user", "content": userText}}}
		if c.usageChunk {
			body["stream_options"] = map[string]any{"include_usage": true}
		}
		if c.maxTokens > 0 {
			body["max_tokens"] = c.maxTokens
		}
	default:
		body = map[string]any{"model": model, "system": systemText, "max_tokens": 1024,
			"messages": []map[string]any{{"role": "user", "content": userText}}}
		if c.maxTokens > 0 {
			body["max_tokens"] = c.maxTokens
		}
	}
	if c.stream {
		body["stream"] = true
	}
	b, _ := json.Marshal(body)
	return &providers.Request{Endpoint: s.endpoint, Body: b, Stream: c.stream, WantUsageChunk: c.usageChunk}
}

// recorder collects emitted events; failAt makes emit fail on that event (1-based).
type recorder struct {
	events []providers.Event
	failAt int
}

var errEmit = errors.New("providertest: emit refused the event")

func (r *recorder) emit(ev providers.Event) error {
	r.events = append(r.events, providers.Event{Name: ev.Name, Data: bytes.Clone(ev.Data)})
	if len(r.events) == r.failAt {
		return errEmit
	}
	return nil
}

// ok checks a successful call: the answer's text and finish, and its usage against what the
// upstream billed.
func (s *suite) ok(t *testing.T, c call, want string, cut bool) {
	f := s.start(t, Config{})
	var rec recorder
	res, err := f.p.Do(t.Context(), s.request(c), rec.emit)
	if err != nil {
		t.Fatalf("Do: %v", err)
	}
	if res == nil || res.StatusCode != http.StatusOK {
		t.Fatalf("Do: Result = %+v, want status 200", res)
	}
	var a answer
	if c.stream {
		if res.Body != nil {
			t.Errorf("stream Result.Body = %.100q, want nil", res.Body)
		}
		a = s.parseStream(t, rec.events, true)
	} else {
		if len(rec.events) > 0 {
			t.Errorf("non-stream call emitted %d events", len(rec.events))
		}
		a = s.parseBody(t, res.Body)
	}
	if a.text != want {
		t.Errorf("answer text = %q, want %q", a.text, want)
	}
	if wantFinish := s.finish(cut); a.finish != wantFinish {
		t.Errorf("finish = %q, want %q", a.finish, wantFinish)
	}
	if c.usageChunk != a.usageChunk && s.endpoint == EndpointChat {
		t.Errorf("usage chunk sent = %v, want %v", a.usageChunk, c.usageChunk)
	}

	// The adapter may have the whole answer before the handler counts it, so wait for the
	// count, and take the usage from that same snapshot.
	var st Stats
	waitFor(t, "the upstream to count the answer", func() bool { st = f.u.Stats(); return st.Succeeded == 1 })
	billed := tokens.Usage{PromptTokens: st.PromptTokens, CompletionTokens: st.CompletionTokens}
	if res.Usage == nil || *res.Usage != billed {
		t.Errorf("Result.Usage = %+v, want %+v", res.Usage, billed)
	}
	if a.usage != nil && *a.usage != billed {
		t.Errorf("usage in the answer = %+v, want %+v", a.usage, billed)
	}
	if a.usage == nil && (!c.stream || s.endpoint != EndpointChat || c.usageChunk) {
		t.Errorf("the answer reports no usage")
	}
}

// finish is the finish reason of a complete answer in the suite's API.
func (s *suite) finish(cut bool) string {
	switch {
	case s.endpoint == EndpointResponses && cut:
		return "incomplete"
	case s.endpoint == EndpointResponses:
		return "completed"
	case s.endpoint == EndpointMessages && cut:
		return "max_tokens"
	case s.endpoint == EndpointMessages:
		return "end_turn"
	case cut:
		return "length"
	}
	return "stop"
}

// fails checks a failed call.
func (s *suite) fails(t *testing.T, c call, status int, retryable bool, is error, partial bool) {
	f := s.start(t, Config{})
	ctx := t.Context()
	if c.mode == ModeHang {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 100*time.Millisecond)
		defer cancel()
	}
	var rec recorder
	began := time.Now()
	res, err := f.p.Do(ctx, s.request(c), rec.emit)
	if elapsed := time.Since(began); c.mode == ModeHang && elapsed > 5*time.Second {
		t.Errorf("Do took %v after a 100ms deadline", elapsed)
	}
	e := checkError(t, err, status, retryable, is)
	if e != nil && status >= 400 && status < 500 && !strings.Contains(e.Message, "fake upstream: mode "+string(c.mode)) {
		t.Errorf("Error.Message = %q, want the upstream's message", e.Message)
	}
	if e != nil && c.mode == Mode429 && e.RetryAfter != retryAfter {
		t.Errorf("Error.RetryAfter = %v, want %v", e.RetryAfter, retryAfter)
	}
	if partial && res == nil {
		t.Errorf("Do returned a nil Result with a failed stream, want the partial Result")
	}
	if c.stream {
		if a := s.parseStream(t, rec.events, false); a.complete {
			t.Errorf("a failed stream emitted its terminator (%d events)", len(rec.events))
		}
	}
}

// checkError checks that err is a *providers.Error with the given status and retryability
// that wraps is (if set) and holds no prompt text, and returns it.
func checkError(t *testing.T, err error, status int, retryable bool, is error) *providers.Error {
	t.Helper()
	e, ok := errors.AsType[*providers.Error](err)
	if !ok || e == nil {
		t.Errorf("Do error = %v (%T), want a *providers.Error", err, err)
		return nil
	}
	if e.StatusCode != status {
		t.Errorf("Error.StatusCode = %d, want %d (error %v)", e.StatusCode, status, err)
	}
	if e.Retryable() != retryable {
		t.Errorf("Error.Retryable() = %v, want %v (error %v)", e.Retryable(), retryable, err)
	}
	if is != nil && !errors.Is(err, is) {
		t.Errorf("Do error = %v, want one wrapping %v", err, is)
	}
	if e.Provider == "" {
		t.Errorf("Error.Provider is empty")
	}
	if strings.Contains(err.Error(), marker) {
		t.Errorf("error %q quotes the prompt", err)
	}
	return e
}

// canceledMidStream cancels the call, with a cause, as soon as the first event of a dripped
// stream arrives: Do must return promptly with that cause and the partial Result.
func (s *suite) canceledMidStream(t *testing.T) {
	f := s.start(t, Config{DripInterval: 5 * time.Millisecond})
	ctx, cancel := context.WithCancelCause(t.Context())
	defer cancel(nil)
	var rec recorder
	emit := func(ev providers.Event) error {
		cancel(errCallerGone)
		return rec.emit(ev)
	}
	began := time.Now()
	res, err := f.p.Do(ctx, s.request(call{mode: ModeDrip, stream: true}), emit)
	if elapsed := time.Since(began); elapsed > 5*time.Second {
		t.Errorf("Do took %v after the cancel", elapsed)
	}
	_ = checkError(t, err, 0, true, errCallerGone)
	if res == nil {
		t.Errorf("Do returned a nil Result after the stream began, want the partial Result")
	}
	if a := s.parseStream(t, rec.events, false); a.complete {
		t.Errorf("a canceled stream emitted its terminator")
	}
}

// errCallerGone is the cause the suite cancels calls with.
var errCallerGone = errors.New("providertest: the caller went away")

// emitFails makes emit refuse the second event: Do must stop and return emit's error.
func (s *suite) emitFails(t *testing.T) {
	f := s.start(t, Config{})
	rec := recorder{failAt: 2}
	res, err := f.p.Do(t.Context(), s.request(call{stream: true}), rec.emit)
	if !errors.Is(err, errEmit) {
		t.Errorf("Do error = %v, want emit's error", err)
	}
	if res == nil {
		t.Errorf("Do returned a nil Result after emitting, want the partial Result")
	}
	if len(rec.events) != 2 {
		t.Errorf("emit called %d times, want 2 (Do must stop at emit's error)", len(rec.events))
	}
}

// reuse makes a run of calls that should all share one keep-alive connection: an adapter
// that does not read a response to its end and close it makes the next call dial again.
func (s *suite) reuse(t *testing.T) {
	f := s.start(t, Config{})
	calls := []call{{}, {mode: Mode429}, {mode: ModeBadRequest}, {stream: true}, {mode: Mode500}, {mode: Mode503, stream: true}, {}}
	for _, c := range calls {
		var rec recorder
		_, err := f.p.Do(t.Context(), s.request(c), rec.emit)
		if (err == nil) != (c.mode == "") {
			t.Fatalf("Do in mode %q: error %v", c.mode, err)
		}
	}
	if st := f.u.Stats(); st.TotalConns != 1 {
		t.Errorf("%d calls opened %d connections, want 1", len(calls), st.TotalConns)
	}
}
