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
)

// The conformance suite: Run checks an adapter against the providers.Provider contract over
// real HTTP, one fresh Upstream per case, in the client API the adapter is asked to answer.

// Client APIs Run can speak.
const (
	EndpointChat     = "/v1/chat/completions"
	EndpointMessages = "/v1/messages"
)

// Option changes how Run drives an adapter.
type Option func(*suite)

// Endpoint makes Run send requests in the client API at path, EndpointChat (the default) or
// EndpointMessages, and check that every answer, stream and error comes back in it.
func Endpoint(path string) Option { return func(s *suite) { s.endpoint = path } }

// Handler serves each case's Upstream through wrap(u) instead of u itself: for an adapter
// whose upstream has other paths or auth (strip a deployment prefix, check a key header), or
// another API (Gemini: http.HandlerFunc(u.ServeGemini)). wrap must pass the request on
// unchanged apart from its path.
func Handler(wrap func(u *Upstream) http.Handler) Option { return func(s *suite) { s.wrap = wrap } }

// Limits returns the limits Run expects every adapter it is given to be built with: the
// oversized-answer cases rely on an answer of BigBytes (1 MiB) exceeding MaxResponseBytes,
// and on one stream event of 64 KiB exceeding MaxLineBytes.
func Limits() providers.Limits {
	return providers.Limits{IdleTimeout: 30 * time.Second, MaxResponseBytes: 256 << 10, MaxLineBytes: 32 << 10}
}

// Run checks the adapter newAdapter builds for an upstream at baseURL (the root URL of an
// httptest server, with no path; newAdapter appends whatever its API needs) and Limits().
// Every case runs in parallel on its own Upstream and checks that the adapter:
//
//   - answers a request, whole and streamed, in the client's API with the upstream's
//     content, finish reason and usage (Result.Usage equal to what the upstream billed, and
//     to what the answer itself reports), and a max_tokens cut as a length finish;
//   - forwards a stream's events as they come, without [DONE] for chat (Sluice adds it)
//     and ending with message_stop for Messages, and the usage chunk only when asked for;
//   - turns 429 (with Retry-After or Gemini's retry delay), 5xx, resets, hangs and cuts
//     into retryable *providers.Error, and a caller's 4xx into a non-retryable one with
//     the upstream's message;
//   - reports a cut answer or stream as ErrTruncated with the partial Result, never as a
//     complete one; a non-JSON answer as ErrBadResponse; an oversized answer or stream
//     event as ErrTooLarge;
//   - returns promptly, with the context's cause, when its deadline passes before the answer
//     or it is canceled during one, and when emit fails;
//   - puts no prompt text in errors, and releases every response: after each case every
//     connection to the upstream closes once the server stops keeping it alive, and a run
//     of answers and errors reuses one connection.
//
// Run the suite under a goroutine leak check (goleak.VerifyTestMain) to catch adapters
// that leave goroutines behind.
func Run(t *testing.T, newAdapter func(baseURL string) providers.Provider, opts ...Option) {
	t.Helper()
	s := &suite{endpoint: EndpointChat, newAdapter: newAdapter, wrap: func(u *Upstream) http.Handler { return u }}
	for _, o := range opts {
		o(s)
	}
	if s.endpoint != EndpointChat && s.endpoint != EndpointMessages {
		t.Fatalf("providertest.Run: unsupported endpoint %q", s.endpoint)
	}
	for _, c := range s.cases() {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			c.run(t)
		})
	}
}

type suite struct {
	endpoint   string
	newAdapter func(baseURL string) providers.Provider
	wrap       func(u *Upstream) http.Handler
}

type testCase struct {
	name string
	run  func(t *testing.T)
}

// The conversation every case sends. marker must never appear in an error.
const (
	marker     = "zebra"
	userText   = "conformance " + marker + " says hello to the adapter"
	systemText = "Answer briefly."
	wantText   = "Echo: " + userText
)

// retryAfter is the Retry-After the suite's upstreams send with 429 and 503.
const retryAfter = 2 * time.Second

// call is one request the suite makes.
type call struct {
	mode       Mode // chosen by the model's ":<mode>" suffix; "" is ok
	stream     bool
	usageChunk bool // the client asked for the usage chunk (chat only)
	maxTokens  int
}

func (s *suite) cases() []testCase {
	chat := s.endpoint == EndpointChat
	cases := []testCase{
		{"ok", func(t *testing.T) { s.ok(t, call{}, wantText, false) }},
		{"ok stream", func(t *testing.T) { s.ok(t, call{stream: true}, wantText, false) }},
		{"max tokens", func(t *testing.T) { s.ok(t, call{maxTokens: 3}, "Echo: conformance "+marker, true) }},
		{"max tokens stream", func(t *testing.T) { s.ok(t, call{stream: true, maxTokens: 3}, "Echo: conformance "+marker, true) }},
		{"drip", func(t *testing.T) { s.ok(t, call{mode: ModeDrip}, wantText, false) }},
		{"drip stream", func(t *testing.T) { s.ok(t, call{mode: ModeDrip, stream: true}, wantText, false) }},
		{"canceled mid-stream", s.canceledMidStream},
		{"emit fails", s.emitFails},
		{"connection reused", s.reuse},
	}
	if chat {
		cases = append(cases, testCase{"ok stream with usage chunk", func(t *testing.T) {
			s.ok(t, call{stream: true, usageChunk: true}, wantText, false)
		}})
	}
	type failure struct {
		mode      Mode
		stream    bool
		status    int   // the *providers.Error's StatusCode
		retryable bool  // its Retryable()
		is        error // a cause it must wrap, if any
		partial   bool  // a non-nil Result must come with it
	}
	failures := []failure{
		{mode: Mode429, status: 429, retryable: true},
		{mode: Mode429, stream: true, status: 429, retryable: true},
		{mode: ModeBadRequest, status: 400},
		{mode: ModeBadRequest, stream: true, status: 400},
		{mode: ModeUnauthorized, status: 401},
		{mode: Mode500, status: 500, retryable: true},
		{mode: Mode502, status: 502, retryable: true},
		{mode: Mode503, status: 503, retryable: true},
		{mode: Mode503, stream: true, status: 503, retryable: true},
		{mode: Mode504, status: 504, retryable: true},
		{mode: ModeReset, retryable: true},
		{mode: ModeReset, stream: true, retryable: true},
		{mode: ModeHang, retryable: true, is: context.DeadlineExceeded},
		{mode: ModeHang, stream: true, retryable: true, is: context.DeadlineExceeded},
		{mode: ModeTruncate, retryable: true, is: providers.ErrTruncated},
		{mode: ModeTruncate, stream: true, retryable: true, is: providers.ErrTruncated, partial: true},
		{mode: ModeMidstream, stream: true, retryable: true, is: providers.ErrTruncated, partial: true},
		{mode: ModeGarbage, is: providers.ErrBadResponse},
		{mode: ModeBig, is: providers.ErrTooLarge},
		{mode: ModeBig, stream: true, is: providers.ErrTooLarge, partial: true},
	}
	for _, f := range failures {
		name := string(f.mode)
		if f.stream {
			name += " stream"
		}
		cases = append(cases, testCase{name, func(t *testing.T) {
			s.fails(t, call{mode: f.mode, stream: f.stream}, f.status, f.retryable, f.is, f.partial)
		}})
	}
	return cases
}

// fixture is one case's upstream and adapter.
type fixture struct {
	u   *Upstream
	srv *httptest.Server
	p   providers.Provider
}

// start serves a fresh Upstream and builds an adapter for it. Its cleanup checks that every
// connection closes once the server stops keeping idle ones alive: one that stays open is
// a response the adapter never released (or a handler still writing to it).
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
		waitFor(t, "every upstream connection to close", func() bool { return u.Stats().OpenConns == 0 })
	})
	return f
}

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
	if s.endpoint == EndpointChat {
		body = map[string]any{"model": model, "messages": []map[string]any{
			{"role": "system", "content": systemText}, {"role": "user", "content": userText}}}
		if c.usageChunk {
			body["stream_options"] = map[string]any{"include_usage": true}
		}
		if c.maxTokens > 0 {
			body["max_tokens"] = c.maxTokens
		}
	} else {
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

	waitFor(t, "the upstream to count the answer", func() bool { return f.u.Stats().Succeeded == 1 })
	st := f.u.Stats()
	billed := providers.Usage{PromptTokens: st.PromptTokens, CompletionTokens: st.CompletionTokens}
	if res.Usage == nil || *res.Usage != billed {
		t.Errorf("Result.Usage = %+v, want %+v", res.Usage, billed)
	}
	if a.usage != nil && *a.usage != billed {
		t.Errorf("usage in the answer = %+v, want %+v", a.usage, billed)
	}
	if a.usage == nil && (!c.stream || s.endpoint == EndpointMessages || c.usageChunk) {
		t.Errorf("the answer reports no usage")
	}
}

// finish is the finish reason of a complete answer in the suite's API.
func (s *suite) finish(cut bool) string {
	switch {
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
	checkError(t, err, 0, true, errCallerGone)
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

// answer is what a client would make of an answer.
type answer struct {
	text       string
	finish     string
	usage      *providers.Usage
	usageChunk bool // chat: a usage chunk was sent
	complete   bool // the answer has its final event (chat: a finish reason; Messages: message_stop)
}

// parseBody reads a whole answer in the suite's API.
func (s *suite) parseBody(t *testing.T, b []byte) answer {
	t.Helper()
	var a answer
	if s.endpoint == EndpointChat {
		var c struct {
			Object  string `json:"object"`
			Choices []struct {
				Message struct {
					Role    string  `json:"role"`
					Content *string `json:"content"`
				} `json:"message"`
				FinishReason string `json:"finish_reason"`
			} `json:"choices"`
			Usage *chatUsage `json:"usage"`
		}
		if err := json.Unmarshal(b, &c); err != nil || c.Object != "chat.completion" || len(c.Choices) != 1 ||
			c.Choices[0].Message.Role != "assistant" || c.Choices[0].Message.Content == nil {
			t.Fatalf("answer is not a chat.completion with one choice: %.300s (%v)", b, err)
		}
		a.text, a.finish, a.complete = *c.Choices[0].Message.Content, c.Choices[0].FinishReason, true
		if c.Usage != nil {
			a.usage = &providers.Usage{PromptTokens: c.Usage.PromptTokens, CompletionTokens: c.Usage.CompletionTokens}
			if c.Usage.TotalTokens != c.Usage.PromptTokens+c.Usage.CompletionTokens {
				t.Errorf("usage total_tokens = %d, want %d", c.Usage.TotalTokens, c.Usage.PromptTokens+c.Usage.CompletionTokens)
			}
		}
		return a
	}
	var m messagesAnswer
	if err := json.Unmarshal(b, &m); err != nil || m.Type != "message" || m.Role != "assistant" ||
		!strings.HasPrefix(m.ID, "msg_") || m.StopReason == nil {
		t.Fatalf("answer is not a Messages message: %.300s (%v)", b, err)
	}
	for _, c := range m.Content {
		if c.Type == "text" {
			a.text += c.Text
		}
	}
	a.finish, a.complete = *m.StopReason, true
	a.usage = &providers.Usage{PromptTokens: m.Usage.InputTokens, CompletionTokens: m.Usage.OutputTokens}
	return a
}

type chatUsage struct {
	PromptTokens     int64 `json:"prompt_tokens"`
	CompletionTokens int64 `json:"completion_tokens"`
	TotalTokens      int64 `json:"total_tokens"`
}

type messagesUsage struct {
	InputTokens  int64 `json:"input_tokens"`
	OutputTokens int64 `json:"output_tokens"`
}

type messagesAnswer struct {
	ID      string `json:"id"`
	Type    string `json:"type"`
	Role    string `json:"role"`
	Content []struct {
		Type string `json:"type"`
		Text string `json:"text"`
	} `json:"content"`
	StopReason *string       `json:"stop_reason"`
	Usage      messagesUsage `json:"usage"`
}

// parseStream reads emitted events in the suite's API, checking that they are well formed
// and in order. With whole set, the stream must also be complete.
func (s *suite) parseStream(t *testing.T, events []providers.Event, whole bool) answer {
	t.Helper()
	var a answer
	if s.endpoint == EndpointChat {
		a = parseChatStream(t, events)
	} else {
		a = parseMessagesStream(t, events)
	}
	if whole && !a.complete {
		t.Errorf("stream of %d events ended without its final event", len(events))
	}
	return a
}

func parseChatStream(t *testing.T, events []providers.Event) answer {
	t.Helper()
	var a answer
	for i, ev := range events {
		if ev.Name != "" {
			t.Errorf("chat event %d has name %q, want none", i, ev.Name)
		}
		if string(ev.Data) == "[DONE]" {
			t.Fatalf("chat event %d is [DONE]; Sluice writes that itself", i)
		}
		if a.usageChunk {
			t.Errorf("chat event %d follows the usage chunk", i)
		}
		var c struct {
			Object  string `json:"object"`
			Choices []struct {
				Delta struct {
					Role    string  `json:"role"`
					Content *string `json:"content"`
				} `json:"delta"`
				FinishReason *string `json:"finish_reason"`
			} `json:"choices"`
			Usage *chatUsage `json:"usage"`
		}
		if err := json.Unmarshal(ev.Data, &c); err != nil || c.Object != "chat.completion.chunk" {
			t.Fatalf("chat event %d is not a chat.completion.chunk: %.300s (%v)", i, ev.Data, err)
		}
		if c.Usage != nil && len(c.Choices) == 0 {
			a.usageChunk = true
			a.usage = &providers.Usage{PromptTokens: c.Usage.PromptTokens, CompletionTokens: c.Usage.CompletionTokens}
			continue
		}
		if len(c.Choices) != 1 {
			t.Fatalf("chat event %d has %d choices, want 1", i, len(c.Choices))
		}
		ch := c.Choices[0]
		if i == 0 && ch.Delta.Role != "assistant" {
			t.Errorf("first chat event has role %q, want assistant", ch.Delta.Role)
		}
		if a.complete {
			t.Errorf("chat event %d follows the finish", i)
		}
		if ch.Delta.Content != nil {
			a.text += *ch.Delta.Content
		}
		if ch.FinishReason != nil {
			a.finish, a.complete = *ch.FinishReason, true
		}
	}
	return a
}

func parseMessagesStream(t *testing.T, events []providers.Event) answer {
	t.Helper()
	var a answer
	open := -1 // the open content block
	next := 0  // the index the next block must have
	var usage messagesUsage
	for i, ev := range events {
		var e struct {
			Type    string `json:"type"`
			Message *struct {
				ID    string        `json:"id"`
				Usage messagesUsage `json:"usage"`
			} `json:"message"`
			Index        int `json:"index"`
			ContentBlock *struct {
				Type string `json:"type"`
			} `json:"content_block"`
			Delta *struct {
				Type       string `json:"type"`
				Text       string `json:"text"`
				StopReason string `json:"stop_reason"`
			} `json:"delta"`
			Usage *messagesUsage `json:"usage"`
		}
		if err := json.Unmarshal(ev.Data, &e); err != nil || e.Type == "" {
			t.Fatalf("Messages event %d is not an event: %.300s (%v)", i, ev.Data, err)
		}
		if ev.Name != e.Type {
			t.Errorf("Messages event %d is named %q but has type %q", i, ev.Name, e.Type)
		}
		if a.complete {
			t.Errorf("Messages event %d follows message_stop", i)
		}
		if (i == 0) != (e.Type == "message_start") {
			t.Fatalf("Messages event %d is %s; a stream begins with exactly one message_start", i, e.Type)
		}
		switch e.Type {
		case "message_start":
			if e.Message == nil || !strings.HasPrefix(e.Message.ID, "msg_") {
				t.Errorf("message_start without a message with a msg_ id: %.300s", ev.Data)
			} else {
				usage = e.Message.Usage
			}
		case "content_block_start":
			if open >= 0 || e.Index != next || e.ContentBlock == nil {
				t.Errorf("content_block_start %d while block %d is open or out of order (want %d)", e.Index, open, next)
			}
			open, next = e.Index, next+1
		case "content_block_delta":
			if e.Index != open || e.Delta == nil {
				t.Errorf("content_block_delta for block %d while block %d is open", e.Index, open)
			} else if e.Delta.Type == "text_delta" {
				a.text += e.Delta.Text
			}
		case "content_block_stop":
			if e.Index != open {
				t.Errorf("content_block_stop for block %d while block %d is open", e.Index, open)
			}
			open = -1
		case "message_delta":
			if open >= 0 || e.Delta == nil || e.Usage == nil {
				t.Errorf("message_delta with block %d open or without delta and usage: %.300s", open, ev.Data)
				continue
			}
			a.finish = e.Delta.StopReason
			usage.OutputTokens = e.Usage.OutputTokens
			if e.Usage.InputTokens > 0 {
				usage.InputTokens = e.Usage.InputTokens
			}
			a.usage = &providers.Usage{PromptTokens: usage.InputTokens, CompletionTokens: usage.OutputTokens}
		case "message_stop":
			if a.finish == "" {
				t.Errorf("message_stop before a message_delta with the stop reason")
			}
			a.complete = true
		}
	}
	return a
}
