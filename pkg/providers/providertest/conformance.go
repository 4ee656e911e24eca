package providertest

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/sluicehq/sluice/pkg/providers"
)

// The conformance suite: Run checks an adapter against the providers.Provider contract over
// real HTTP, one fresh Upstream per case, in the client API the adapter is asked to answer.

// Client APIs Run can speak.
const (
	EndpointChat      = "/v1/chat/completions"
	EndpointMessages  = "/v1/messages"
	EndpointResponses = "/v1/responses"
)

// Option changes how Run drives an adapter.
type Option func(*suite)

// Endpoint makes Run send requests in the client API at path, EndpointChat (the default),
// EndpointMessages or EndpointResponses, and check that every answer, stream and error
// comes back in it.
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
//     connection to the upstream that carried a request closes once the server stops
//     keeping it alive, and a run of answers and errors reuses one connection.
//
// Run the suite under a goroutine leak check (goleak.VerifyTestMain) to catch adapters
// that leave goroutines behind.
func Run(t *testing.T, newAdapter func(baseURL string) providers.Provider, opts ...Option) {
	t.Helper()
	s := &suite{endpoint: EndpointChat, newAdapter: newAdapter, wrap: func(u *Upstream) http.Handler { return u }}
	for _, o := range opts {
		o(s)
	}
	if s.endpoint != EndpointChat && s.endpoint != EndpointMessages && s.endpoint != EndpointResponses {
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
