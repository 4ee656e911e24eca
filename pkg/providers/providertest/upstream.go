package providertest

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Defaults for unset Config fields and fixed limits.
const (
	defaultRetryAfter   = 1
	defaultDripInterval = 300 * time.Millisecond
	defaultBigBytes     = 5 << 20
	maxRequestBytes     = 8 << 20
)

// Config sets how an Upstream behaves. The zero Config answers every request
// normally and at once.
type Config struct {
	// Mix is a weighted random choice of modes, such as
	// "ok=60,429=10,503=8,504=4,reset=5,truncate=5,midstream=3,drip=3,hang=2".
	// Empty means always ok.
	Mix string
	// Seed seeds the Mix; a given seed yields the same sequence of modes.
	Seed int64
	// Latency is waited before every answer, errors included.
	Latency time.Duration
	// Jitter adds a uniform random extra latency in [0, Jitter).
	Jitter time.Duration
	// RetryAfter is the Retry-After, in seconds, sent with 429 and 503 (default 1).
	RetryAfter int
	// DripInterval is the pause between bytes in ModeDrip (default 300ms).
	DripInterval time.Duration
	// BigBytes is the content length in ModeBig (default 5 MiB).
	BigBytes int
	// StreamChunks is the number of content pieces in a streamed answer
	// (default, or if the answer has fewer words: one per word).
	StreamChunks int
}

// Upstream is a fake LLM provider; it implements http.Handler. It is safe for
// concurrent use and starts no goroutines.
type Upstream struct {
	cfg       Config
	mix       mix
	mu        sync.Mutex // guards rng
	rng       *rand.Rand
	closed    chan struct{}
	closeOnce sync.Once
	seq       atomic.Int64 // numbers answer ids

	requests [len(modes)]atomic.Int64
	conns    connCounter

	// The answers written in full and their usage change together, under one lock, so that
	// Stats never shows a success without its tokens (or tokens without their success).
	tallyMu sync.Mutex
	tally   tally
	// finishing counts answers whose last byte may have reached the client but which are
	// not tallied yet; Stats waits for them, so a caller that has just read an answer sees it.
	finishing int
}

// tally is what the successful answers add up to.
type tally struct{ succeeded, promptTokens, completionTokens int64 }

// Stats is a snapshot of what an Upstream has done since it started or was Reset.
type Stats struct {
	// Requests counts requests per chosen mode; modes never chosen are absent.
	Requests map[Mode]int64 `json:"requests"`
	// OpenConns is the number of TCP connections open now.
	OpenConns int64 `json:"open_conns"`
	// UnusedConns is how many of OpenConns have not carried a request yet: a client's
	// transport dialled them and keeps them idle (one dialled for a request that was
	// canceled before the dial completed stays in its pool). They hold no response, so
	// they are no leak; OpenConns - UnusedConns is what a response left unreleased keeps open.
	UnusedConns int64 `json:"unused_conns"`
	// TotalConns is the number of TCP connections accepted.
	TotalConns int64 `json:"total_conns"`
	// PromptTokens sums the prompt usage of successful answers.
	PromptTokens int64 `json:"prompt_tokens"`
	// CompletionTokens sums the completion usage of successful answers.
	CompletionTokens int64 `json:"completion_tokens"`
	// Succeeded counts answers written in full: ok, big, drip and complete streams.
	Succeeded int64 `json:"succeeded"`
}

// errClosed reports that the Upstream was closed while a handler waited.
var errClosed = errors.New("providertest: upstream closed")

// New returns an Upstream configured by cfg. It returns an error if cfg.Mix
// does not parse or a duration, size or count is negative.
func New(cfg Config) (*Upstream, error) {
	m, err := parseMix(cfg.Mix)
	var errs []error
	if err != nil {
		errs = append(errs, err)
	}
	for name, v := range map[string]int64{
		"Latency": int64(cfg.Latency), "Jitter": int64(cfg.Jitter), "RetryAfter": int64(cfg.RetryAfter),
		"DripInterval": int64(cfg.DripInterval), "BigBytes": int64(cfg.BigBytes), "StreamChunks": int64(cfg.StreamChunks),
	} {
		if v < 0 {
			errs = append(errs, fmt.Errorf("%s is negative", name))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("providertest: %w", err)
	}
	cfg.RetryAfter = cmp.Or(cfg.RetryAfter, defaultRetryAfter)
	cfg.DripInterval = cmp.Or(cfg.DripInterval, defaultDripInterval)
	cfg.BigBytes = cmp.Or(cfg.BigBytes, defaultBigBytes)
	return &Upstream{
		cfg:    cfg,
		mix:    m,
		rng:    rand.New(rand.NewPCG(uint64(cfg.Seed), 0)),
		closed: make(chan struct{}),
	}, nil
}

// Start is a test helper: it serves a new Upstream from an httptest.Server
// with ConnState wired, and registers a cleanup that closes the Upstream and
// then the server. It fails t if cfg is invalid.
func Start(t testing.TB, cfg Config) (*Upstream, *httptest.Server) {
	t.Helper()
	u, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(u)
	srv.Config.ConnState = u.ConnState
	srv.Start()
	t.Cleanup(func() {
		u.Close() // ends hanging and dripping handlers, which srv.Close waits for
		srv.Close()
	})
	return u, srv
}

// Close makes every waiting handler (latency, hang, drip) cut its connection
// and return, now and for later requests, so that http.Server.Shutdown and
// httptest.Server.Close do not wait for them. It is safe to call more than once.
func (u *Upstream) Close() {
	u.closeOnce.Do(func() { close(u.closed) })
}

// ConnState counts connections, and which have carried a request; set it as
// http.Server.ConnState.
func (u *Upstream) ConnState(c net.Conn, s http.ConnState) { u.conns.track(c, s) }

// Stats returns a snapshot of the counters. Succeeded, PromptTokens and CompletionTokens
// are consistent with each other: the tokens are those of exactly the Succeeded answers.
func (u *Upstream) Stats() Stats {
	u.tallyMu.Lock()
	for deadline := time.Now().Add(2 * time.Second); u.finishing > 0 && time.Now().Before(deadline); {
		u.tallyMu.Unlock()
		time.Sleep(time.Millisecond)
		u.tallyMu.Lock()
	}
	t := u.tally
	u.tallyMu.Unlock()
	s := Stats{
		Requests:         make(map[Mode]int64),
		PromptTokens:     t.promptTokens,
		CompletionTokens: t.completionTokens,
		Succeeded:        t.succeeded,
	}
	s.OpenConns, s.UnusedConns, s.TotalConns = u.conns.counts()
	for i, m := range modes {
		if n := u.requests[i].Load(); n > 0 {
			s.Requests[m] = n
		}
	}
	return s
}

// Reset zeroes the counters, except OpenConns and UnusedConns, which track live
// connections.
func (u *Upstream) Reset() {
	for i := range u.requests {
		u.requests[i].Store(0)
	}
	u.conns.resetTotal()
	u.tallyMu.Lock()
	u.tally = tally{}
	u.tallyMu.Unlock()
}

// ServeHTTP answers GET /stats, POST /stats/reset, and POST to the provider
// routes (chat/completions, completions, embeddings, messages, responses), with or
// without the /v1 prefix, in the mode chosen for the request. The request is
// checked before a mode is chosen, so even fault modes answer 400 to a body
// that is not valid for its route or an X-Fake-Mode that names no mode;
// an unknown path gets 404 and a method other than POST 405.
func (u *Upstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case "/stats":
		writeJSON(w, http.StatusOK, u.Stats())
		return
	case "/stats/reset":
		if r.Method != http.MethodPost {
			writeJSON(w, http.StatusMethodNotAllowed, openAIError(http.StatusMethodNotAllowed, "use POST"))
			return
		}
		u.Reset()
		w.WriteHeader(http.StatusNoContent)
		return
	}
	rt, ok := routes[strings.TrimPrefix(r.URL.Path, "/v1")]
	if !ok {
		writeJSON(w, http.StatusNotFound, openAIError(http.StatusNotFound, "unknown path "+r.URL.Path))
		return
	}
	if r.Method != http.MethodPost {
		writeJSON(w, http.StatusMethodNotAllowed, rt.errorBody(http.StatusMethodNotAllowed, "use POST"))
		return
	}
	var req request
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxRequestBytes))
	if err == nil {
		err = json.Unmarshal(body, &req)
	}
	var p prompt
	if err == nil {
		p, err = rt.parse(&req)
	}
	mode := ModeOK
	if err == nil {
		mode, err = u.choose(r.Header.Get("X-Fake-Mode"), req.Model)
	}
	if err != nil {
		writeJSON(w, http.StatusBadRequest, rt.errorBody(http.StatusBadRequest, err.Error()))
		return
	}
	u.requests[mode.index()].Add(1)

	ctx := r.Context()
	if err := u.pause(ctx, u.latency()); err != nil {
		u.abandon(w, err)
		return
	}
	if code := mode.status(); code != 0 {
		if code == http.StatusTooManyRequests || code == http.StatusServiceUnavailable {
			w.Header().Set("Retry-After", strconv.Itoa(u.cfg.RetryAfter))
		}
		w.Header().Set("X-Fake-Mode", string(mode))
		writeJSON(w, code, rt.errorBody(code, "fake upstream: mode "+string(mode)))
		return
	}
	switch mode {
	case ModeReset:
		cut(w, true)
	case ModeHang:
		u.abandon(w, u.pause(ctx, -1))
	case ModeGarbage:
		w.Header().Set("X-Fake-Mode", string(mode))
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusOK)
		_, _ = io.WriteString(w, `{"id":"fake-garbage","choices":[{"message":{"content":"unterminated`+"\x00}]")
	default:
		w.Header().Set("X-Fake-Mode", string(mode))
		c := newContent(p.last, req.MaxTokens, u.cfg.StreamChunks)
		if mode == ModeBig {
			c = bigContent(u.cfg.BigBytes)
		}
		u.deliver(w, r, rt.reply(u.nextID(), &req, p, c), mode)
	}
}

// choose picks the request's mode from the header, else the model, else the mix.
// It returns an error for a header that names no mode.
func (u *Upstream) choose(header, model string) (Mode, error) {
	if header != "" {
		if Mode(header).index() < 0 {
			return "", fmt.Errorf("X-Fake-Mode %q is not a mode", header)
		}
		return Mode(header), nil
	}
	if m, ok := modeFromModel(model); ok {
		return m, nil
	}
	if len(u.mix.modes) == 0 {
		return ModeOK, nil
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.mix.pick(u.rng), nil
}

// nextID numbers answers for their ids.
func (u *Upstream) nextID() int64 { return u.seq.Add(1) }

// latency is the wait before an answer: Latency plus up to Jitter.
func (u *Upstream) latency() time.Duration {
	d := u.cfg.Latency
	if u.cfg.Jitter > 0 {
		d += rand.N(u.cfg.Jitter)
	}
	return d
}

// pause waits d, or forever if d < 0. It returns ctx.Err() if the client went
// away first, or errClosed if the Upstream was closed first.
func (u *Upstream) pause(ctx context.Context, d time.Duration) error {
	var timeout <-chan time.Time
	switch {
	case d == 0:
		return nil
	case d > 0:
		t := time.NewTimer(d)
		defer t.Stop()
		timeout = t.C
	}
	select {
	case <-timeout:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-u.closed:
		return errClosed
	}
}

// abandon ends a handler whose wait was interrupted: a gone client needs no
// answer, but a client of a closed Upstream must not get an empty 200.
func (u *Upstream) abandon(w http.ResponseWriter, err error) {
	if errors.Is(err, errClosed) {
		cut(w, false)
	}
}
