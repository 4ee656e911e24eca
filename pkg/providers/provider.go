package providers

import (
	"cmp"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"time"

	"github.com/sluicehq/sluice/pkg/tokens"
)

// Provider is what every upstream adapter implements.
type Provider interface {
	// Do makes one upstream call. For a non-stream request it returns the whole answer. For a
	// stream request it calls emit with each event as it arrives (emit's error aborts the call)
	// and returns the usage once the stream has ended cleanly.
	//
	// Failures are *Error. A stream that fails after some events were emitted returns a
	// non-nil Result with the usage known so far together with the error.
	Do(ctx context.Context, req *Request, emit func(Event) error) (*Result, error)
}

// Request is one call to make upstream.
type Request struct {
	// Endpoint is the Sluice route the caller used: "/v1/chat/completions", "/v1/completions",
	// "/v1/embeddings", "/v1/messages" or "/v1/responses".
	Endpoint string
	// Body is the client's JSON body with the model already mapped to the upstream's name.
	Body json.RawMessage
	// Stream is true when the client asked for server-sent events.
	Stream bool
	// WantUsageChunk is true when a streaming client asked for the final usage chunk itself
	// (stream_options.include_usage); otherwise Sluice asks for it but does not forward it.
	WantUsageChunk bool
}

// Event is one server-sent event, forwarded to the client as is.
type Event struct {
	Name string // the "event:" field; empty for OpenAI streams
	Data []byte // the "data:" payload
}

// Result is a finished upstream call.
type Result struct {
	StatusCode int
	Body       json.RawMessage // the whole answer; nil for streams
	Usage      *tokens.Usage   // nil when the upstream reported none
}

// Limits bound one upstream call.
type Limits struct {
	// FirstByteTimeout is the longest wait, from the request, for the first byte of the
	// answer's body (the first SSE event of a stream; the whole answer of most non-stream
	// calls, whose headers come when it is ready): it tells a hung upstream from a long
	// answer, which once started is bounded only by IdleTimeout and the job's deadline.
	FirstByteTimeout time.Duration
	// IdleTimeout is the longest silence allowed from an upstream once its answer has begun.
	IdleTimeout time.Duration
	// MaxResponseBytes caps a non-stream answer.
	MaxResponseBytes int64
	// MaxLineBytes caps one SSE line.
	MaxLineBytes int
	// MaxRecapBytes caps the text a translated Responses stream repeats in its closing
	// events (output_text.done, output_item.done, response.completed), which must be held
	// until the stream ends; past it they carry none. 0: DefaultMaxRecapBytes.
	MaxRecapBytes int
}

func (l Limits) withDefaults() Limits {
	if l.IdleTimeout <= 0 {
		l.IdleTimeout = 5 * time.Minute
	}
	if l.FirstByteTimeout <= 0 {
		l.FirstByteTimeout = l.IdleTimeout
	}
	if l.MaxResponseBytes <= 0 {
		l.MaxResponseBytes = 64 << 20
	}
	if l.MaxLineBytes <= 0 {
		l.MaxLineBytes = 16 << 20
	}
	if l.MaxRecapBytes <= 0 {
		l.MaxRecapBytes = DefaultMaxRecapBytes
	}
	return l
}

// ClientConfig sizes the shared HTTP client of one provider family.
type ClientConfig struct {
	// MaxConnsPerHost caps connections to one upstream host; set it to the worker's concurrency.
	MaxConnsPerHost int
	// IdleConnTimeout is how long an idle upstream connection is kept for reuse (90s).
	IdleConnTimeout time.Duration
	// ResponseHeaderTimeout is how long to wait for response headers (a non-stream LLM call
	// sends them only when the whole answer is ready, so keep it long).
	ResponseHeaderTimeout time.Duration
	// H2C makes http:// upstreams speak HTTP/2 without TLS (prior knowledge), so that many
	// calls share one connection, as they already do with https:// upstreams (HTTP/2 by
	// ALPN). Only for plain-HTTP upstreams known to speak it (a sidecar proxy, a server
	// behind Envoy); others then fail to connect.
	H2C bool
}

// NewHTTPClient returns the client one provider family shares across channels. It bounds
// dialing, TLS, waiting for headers, and the number of open and idle connections; it sets no
// Client.Timeout, which would cut long streams (each call has its context's deadline).
func NewHTTPClient(cfg ClientConfig) *http.Client {
	conns := cfg.MaxConnsPerHost
	if conns <= 0 {
		conns = 64
	}
	hdr := cfg.ResponseHeaderTimeout
	if hdr <= 0 {
		hdr = 5 * time.Minute
	}
	t := &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		TLSHandshakeTimeout:   10 * time.Second,
		ResponseHeaderTimeout: hdr,
		ExpectContinueTimeout: time.Second,
		MaxConnsPerHost:       conns,
		MaxIdleConns:          conns,
		MaxIdleConnsPerHost:   conns,
		IdleConnTimeout:       cmp.Or(cfg.IdleConnTimeout, 90*time.Second),
		ForceAttemptHTTP2:     true,
	}
	var rt http.RoundTripper = t
	if cfg.H2C {
		// A transport that speaks h2c cannot also speak HTTP/1 to http:// URLs, so plain
		// upstreams get their own; https:// ones keep HTTP/2 by ALPN with HTTP/1 fallback.
		h2c := t.Clone()
		h2c.Protocols = new(http.Protocols)
		h2c.Protocols.SetUnencryptedHTTP2(true)
		rt = &bySchemeTransport{tls: t, plain: h2c}
	}
	return &http.Client{
		Transport: rt,
		// Upstream redirects are not part of any LLM API; following one could leak the key.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// bySchemeTransport sends http:// requests through plain and the rest through tls.
type bySchemeTransport struct{ tls, plain *http.Transport }

func (b *bySchemeTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.URL.Scheme == "http" {
		return b.plain.RoundTrip(r)
	}
	return b.tls.RoundTrip(r)
}

// CloseIdleConnections closes both transports' idle connections.
func (b *bySchemeTransport) CloseIdleConnections() {
	b.tls.CloseIdleConnections()
	b.plain.CloseIdleConnections()
}

// mustMarshal encodes one of this package's wire types, which cannot fail.
func mustMarshal(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("providers: marshal %T: %v", v, err))
	}
	return b
}

// send performs req with the idle watchdog armed and returns the response, whose body the
// caller must release with httpbody.Close. The returned stop function disarms the watchdog and
// must be called once the body is done with.
func send(ctx context.Context, client *http.Client, provider string, limits Limits,
	build func(ctx context.Context) (*http.Request, error),
) (*http.Response, *idleReader, func(), error) {
	ctx, cancel := context.WithCancelCause(ctx)
	body := &idleReader{idle: limits.IdleTimeout, ctx: ctx}
	// One watchdog: FirstByteTimeout until the body's first byte, then IdleTimeout between
	// reads (idleReader re-arms it).
	body.watch = time.AfterFunc(limits.FirstByteTimeout, func() {
		if body.begun.Load() {
			cancel(ErrIdle)
		} else {
			cancel(ErrFirstByte)
		}
	})
	stop := func() { body.watch.Stop(); cancel(nil) }
	req, err := build(ctx)
	if err != nil {
		stop()
		return nil, nil, nil, &Error{Provider: provider, Err: fmt.Errorf("build request: %w", err), Message: "bad request"}
	}
	resp, err := roundTrip(client, req)
	if err != nil {
		err = causeOr(ctx, err) // before stop, whose cancel would make every cause "context canceled"
		stop()
		return nil, nil, nil, &Error{Provider: provider, Err: err}
	}
	body.r = resp.Body
	return resp, body, stop, nil
}

// roundTrip sends req through client's transport, as client.Do would with the settings
// NewHTTPClient gives it (no redirects followed, no Timeout, no cookie jar), and wraps a
// failure in a *url.Error as Do does. Do would also copy every request's headers for the
// redirects it never follows and add its own frames under each call, which an in-flight
// job holds for as long as the upstream takes. A client with any CheckRedirect is taken
// to follow none, as NewHTTPClient's does (an upstream's redirect could leak its key);
// one without, or a URL with credentials, goes through Do.
func roundTrip(client *http.Client, req *http.Request) (*http.Response, error) {
	if client.Jar != nil || client.Timeout != 0 || client.CheckRedirect == nil || req.URL.User != nil {
		return client.Do(req) // not a client of NewHTTPClient's kind, or a URL with credentials
	}
	rt := client.Transport
	if rt == nil {
		rt = http.DefaultTransport
	}
	resp, err := rt.RoundTrip(req)
	if err != nil {
		if re, ok := errors.AsType[tls.RecordHeaderError](err); ok && string(re.RecordHeader[:]) == "HTTP/" {
			err = http.ErrSchemeMismatch // as Do says it: an https:// channel whose server speaks plain HTTP
		}
		method := cmp.Or(req.Method, http.MethodGet)
		op := method[:1] + strings.ToLower(method[1:])
		return nil, &url.Error{Op: op, URL: req.URL.String(), Err: err}
	}
	return resp, nil
}

// idleReader re-arms the idle watchdog whenever bytes arrive.
type idleReader struct {
	r     io.Reader
	watch *time.Timer
	idle  time.Duration
	ctx   context.Context
	begun atomic.Bool // the first byte has arrived
}

func (r *idleReader) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	if n > 0 {
		r.begun.Store(true)
		r.watch.Reset(r.idle)
	}
	if err != nil && !errors.Is(err, io.EOF) {
		err = causeOr(r.ctx, err)
	}
	return n, err
}

// causeOr returns the cause of ctx's cancellation (ErrIdle, a deadline, a user cancel) if
// there is one, since the transport's own error ("context canceled") says less.
func causeOr(ctx context.Context, err error) error {
	if c := context.Cause(ctx); c != nil {
		return c
	}
	return err
}

// readAll reads at most limit bytes; more is ErrTooLarge.
func readAll(r io.Reader, limit int64) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > limit {
		return nil, ErrTooLarge
	}
	return b, nil
}
