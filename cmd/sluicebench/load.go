package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sluicehq/sluice/pkg/httpbody"
)

// request is what a load goroutine sends, over and over.
type request struct {
	method string
	url    string
	header http.Header
	body   []byte
	// stream: the answer is server-sent events; time to the first "data:" line is recorded
	// too, and an answer without "data: [DONE]" counts as an error.
	stream bool
	// want is the status that counts as success (200 when zero).
	want int
}

// load is one closed-loop run: conc goroutines, each with its own keep-alive connection,
// send req back to back. A timed run (count == 0) warms up for warmup, then records every
// answer that completes within the next dur; a counted run sends exactly count requests and
// records them all.
type load struct {
	req    request
	conc   int
	warmup time.Duration
	dur    time.Duration
	count  int64
	h2c    bool // HTTP/2 without TLS instead of HTTP/1.1
	// spread, if set, replaces req.url: client i sends to spread[i mod len(spread)].
	spread []string
	// onMeasure, if set, is called when the measured window opens and closes (for CPU samples).
	onMeasure func(open bool)
}

// loadResult is what a run measured.
type loadResult struct {
	OK       int64         `json:"ok"`
	Errors   int64         `json:"errors"`
	FirstErr string        `json:"first_error,omitempty"`
	Elapsed  time.Duration `json:"elapsed_ns"`
	Rate     float64       `json:"req_per_s"`
	Latency  summary       `json:"latency"`
	TTFB     *summary      `json:"ttfb,omitempty"`
	lat      *hist
	ttfb     *hist
}

// Phases of a timed run.
const (
	phaseWarmup int32 = iota
	phaseMeasure
	phaseStop
)

// newClient returns a keep-alive client for conc goroutines against one host: at most conc
// connections are kept idle, so none is closed and reopened between requests.
func newClient(conc int, h2c bool) *http.Client {
	t := &http.Transport{
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:        conc,
		MaxIdleConnsPerHost: conc,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
		ForceAttemptHTTP2:   false,
	}
	if h2c { // every request on one connection, as HTTP/2 clients do
		t.Protocols = new(http.Protocols)
		t.Protocols.SetUnencryptedHTTP2(true)
	}
	return &http.Client{Transport: t}
}

// run performs the load and returns what it measured. It returns early, with what it has,
// when ctx ends.
func (l *load) run(ctx context.Context) loadResult {
	client := newClient(l.conc, l.h2c)
	defer client.CloseIdleConnections()
	var (
		phase    atomic.Int32
		tickets  atomic.Int64 // counted runs: requests handed out
		errs     atomic.Int64
		firstErr atomic.Pointer[string]
		wg       sync.WaitGroup
	)
	if l.count > 0 || l.warmup == 0 {
		phase.Store(phaseMeasure)
	}
	lats := make([]*hist, l.conc)
	ttfbs := make([]*hist, l.conc)
	noteErr := func(s string) {
		errs.Add(1)
		firstErr.CompareAndSwap(nil, &s)
	}
	began := time.Now()
	for i := range l.conc {
		lats[i] = &hist{}
		if l.req.stream {
			ttfbs[i] = &hist{}
		}
		lat, ttfb := lats[i], ttfbs[i]
		r := l.req
		if len(l.spread) > 0 {
			r.url = l.spread[i%len(l.spread)]
		}
		wg.Go(func() {
			req, body, err := r.build(ctx)
			if err != nil {
				noteErr(err.Error())
				return
			}
			br := bufio.NewReaderSize(nil, 32<<10)
			want := l.req.want
			if want == 0 {
				want = http.StatusOK
			}
			for ctx.Err() == nil {
				if l.count > 0 {
					if tickets.Add(1) > l.count {
						return
					}
				} else if phase.Load() == phaseStop {
					return
				}
				body.off = 0
				t0 := time.Now()
				first, err := do(client, req, br, want, l.req.stream)
				d := time.Since(t0)
				if err != nil {
					if ctx.Err() != nil {
						return
					}
					noteErr(err.Error())
					if errors.Is(err, errTransport) {
						time.Sleep(10 * time.Millisecond) // the server is down or refusing: don't spin
					}
					continue
				}
				if phase.Load() == phaseMeasure {
					lat.record(d)
					if ttfb != nil {
						ttfb.record(first.Sub(t0))
					}
				}
			}
		})
	}
	var measured, stopped time.Time
	if l.count == 0 {
		stop := func() {
			stopped = time.Now()
			phase.Store(phaseStop)
			if l.onMeasure != nil && !measured.IsZero() {
				l.onMeasure(false)
			}
		}
		if wait(ctx, l.warmup) {
			measured = time.Now()
			phase.Store(phaseMeasure)
			if l.onMeasure != nil {
				l.onMeasure(true)
			}
			wait(ctx, l.dur)
		}
		stop()
	} else {
		measured = began
		if l.onMeasure != nil {
			l.onMeasure(true)
		}
	}
	wg.Wait()
	res := loadResult{Errors: errs.Load(), lat: &hist{}}
	if p := firstErr.Load(); p != nil {
		res.FirstErr = *p
	}
	if l.count == 0 {
		if !measured.IsZero() {
			res.Elapsed = stopped.Sub(measured)
		}
	} else {
		res.Elapsed = time.Since(began)
		if l.onMeasure != nil {
			l.onMeasure(false)
		}
	}
	for _, h := range lats {
		res.lat.merge(h)
	}
	res.OK = int64(res.lat.n)
	res.Latency = res.lat.summary()
	if l.req.stream {
		res.ttfb = &hist{}
		for _, h := range ttfbs {
			res.ttfb.merge(h)
		}
		s := res.ttfb.summary()
		res.TTFB = &s
	}
	if res.Elapsed > 0 {
		res.Rate = float64(res.OK) / res.Elapsed.Seconds()
	}
	return res
}

// errTransport marks a failure to get any response.
var errTransport = errors.New("transport")

// do sends req once and reads the whole answer. For a stream it returns when the first
// "data:" line arrived. Its only allocations are those net/http makes.
func do(client *http.Client, req *http.Request, br *bufio.Reader, want int, stream bool) (first time.Time, err error) {
	resp, err := client.Do(req) //nolint:bodyclose // released by httpbody.Close, the one release helper
	if err != nil {
		return first, fmt.Errorf("%w: %w", errTransport, err)
	}
	defer httpbody.Close(resp)
	if resp.StatusCode != want {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return first, fmt.Errorf("status %d: %s", resp.StatusCode, bytes.TrimSpace(b))
	}
	if !stream {
		if _, err := io.Copy(io.Discard, resp.Body); err != nil {
			return first, fmt.Errorf("read body: %w", err)
		}
		return first, nil
	}
	br.Reset(resp.Body)
	done := false
	for {
		line, err := br.ReadSlice('\n')
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil && !errors.Is(err, bufio.ErrBufferFull) {
			return first, fmt.Errorf("read stream: %w", err)
		}
		if data, ok := bytes.CutPrefix(line, []byte("data:")); ok {
			if first.IsZero() {
				first = time.Now()
			}
			if bytes.Equal(bytes.TrimSpace(data), []byte("[DONE]")) {
				done = true
			}
		}
	}
	br.Reset(nil)
	if !done {
		return first, errors.New("stream ended without data: [DONE]")
	}
	return first, nil
}

// build returns one *http.Request for r that can be sent again and again: rewind its body
// before each send. GetBody serves the transport's own retries (a keep-alive connection the
// server closed just as the request went out) with a fresh reader.
func (r request) build(ctx context.Context) (*http.Request, *replayBody, error) {
	body := &replayBody{b: r.body}
	req, err := http.NewRequestWithContext(ctx, r.method, r.url, nil)
	if err != nil {
		return nil, nil, err
	}
	req.Header = r.header.Clone()
	if r.body != nil {
		req.Body, req.ContentLength = body, int64(len(r.body))
		req.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(r.body)), nil }
	}
	return req, body, nil
}

// replayBody is a request body that can be rewound, so one *http.Request serves every
// iteration of a load goroutine. The transport closes it after writing; Close is a no-op.
type replayBody struct {
	b   []byte
	off int
}

func (r *replayBody) Read(p []byte) (int, error) {
	if r.off >= len(r.b) {
		return 0, io.EOF
	}
	n := copy(p, r.b[r.off:])
	r.off += n
	return n, nil
}

func (r *replayBody) Close() error { return nil }

// wait sleeps for d; it returns false if ctx ended first.
func wait(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
