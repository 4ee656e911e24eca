package webhook

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/sluicehq/sluice/pkg/jobs"
	"github.com/sluicehq/sluice/pkg/jobs/jobstest"
	"github.com/sluicehq/sluice/pkg/secret"
	"github.com/sluicehq/sluice/pkg/store"
)

const testSecret = "whsec_test_0123456789"

// fakeDeliveries is an in-memory DeliveryStore with the same claim semantics as Postgres:
// a claim counts an attempt and hides the delivery until its lease or next attempt time.
type fakeDeliveries struct {
	mu        sync.Mutex
	pending   map[string]*fakeDelivery
	claims    []int // the limit of every ClaimDeliveries call
	handedOut int   // deliveries returned by ClaimDeliveries
	delivered map[string]int
	failed    []fakeResult
	gaveUp    []fakeResult
	changed   chan struct{} // signalled after every call
}

type fakeDelivery struct {
	d   store.Delivery
	due time.Time
}

type fakeResult struct {
	jobID   string
	attempt int
	status  int
	errText string
	next    time.Time
}

func newFakeDeliveries() *fakeDeliveries {
	return &fakeDeliveries{pending: map[string]*fakeDelivery{}, delivered: map[string]int{},
		changed: make(chan struct{}, 1)}
}

func (f *fakeDeliveries) add(d store.Delivery) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.pending[d.Job.ID] = &fakeDelivery{d: d, due: time.Now()}
}

func (f *fakeDeliveries) signal() {
	select {
	case f.changed <- struct{}{}:
	default:
	}
}

func (f *fakeDeliveries) ClaimDeliveries(_ context.Context, c store.DeliveryClaim) ([]store.Delivery, error) {
	limit, lease := c.Limit, c.Lease
	defer f.signal()
	f.mu.Lock()
	defer f.mu.Unlock()
	f.claims = append(f.claims, limit)
	var out []store.Delivery
	now := time.Now()
	for _, p := range f.pending {
		if len(out) == limit {
			break
		}
		if p.due.After(now) {
			continue
		}
		p.d.Attempt++
		p.due = now.Add(lease)
		out = append(out, p.d)
	}
	f.handedOut += len(out)
	return out, nil
}

func (f *fakeDeliveries) MarkDelivered(_ context.Context, jobID string, status int) error {
	defer f.signal()
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.pending, jobID)
	f.delivered[jobID] = status
	return nil
}

func (f *fakeDeliveries) MarkFailed(_ context.Context, jobID string, attempt, status int, errText string, next time.Time) error {
	defer f.signal()
	f.mu.Lock()
	defer f.mu.Unlock()
	f.failed = append(f.failed, fakeResult{jobID, attempt, status, errText, next})
	if p := f.pending[jobID]; p != nil {
		p.due = next
	}
	return nil
}

func (f *fakeDeliveries) GiveUp(_ context.Context, jobID string, attempt, status int, errText string) error {
	defer f.signal()
	f.mu.Lock()
	defer f.mu.Unlock()
	f.gaveUp = append(f.gaveUp, fakeResult{jobID: jobID, attempt: attempt, status: status, errText: errText})
	delete(f.pending, jobID)
	return nil
}

// waitFor waits until cond (called with the store locked) holds, re-checking after every
// store call, or fails the test after 10 s.
func (f *fakeDeliveries) waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	timeout := time.NewTimer(10 * time.Second)
	defer timeout.Stop()
	for {
		f.mu.Lock()
		ok := cond()
		f.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-f.changed:
		case <-timeout.C:
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// startDispatcher runs a Dispatcher until the test ends.
func startDispatcher(t *testing.T, cfg DispatcherConfig, st DeliveryStore, nc *nats.Conn) {
	t.Helper()
	d := NewDispatcher(cfg, st, nc, slog.New(slog.NewTextHandler(t.Output(), nil)))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); d.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			t.Error("dispatcher did not stop within 15s")
		}
	})
}

func succeededDelivery(id, url string, created time.Time) store.Delivery {
	finished := created
	code, pt, ct, cost := 200, int64(12), int64(5), 0.000123
	return store.Delivery{URL: url, Secret: secret.Secret(testSecret), CreatedAt: created, Job: store.Job{
		ID: id, KeyID: "key_test", Endpoint: jobs.EndpointChat, Model: "gpt-4o-mini", Async: true, Status: store.StatusSucceeded,
		Attempts: 1, Metadata: map[string]string{"customer": "42"}, StatusCode: &code,
		Response: json.RawMessage(`{"id":"chatcmpl-1","object":"chat.completion"}`), PromptTokens: &pt,
		CompletionTokens: &ct, CostUSD: &cost, CreatedAt: created.Add(-time.Second), StartedAt: &finished,
		FinishedAt: &finished, Deadline: created.Add(time.Hour)}}
}

// received is one request a test receiver got.
type received struct {
	header http.Header
	body   []byte
}

// receiver is an httptest server that records requests and answers with answer(n), n from 1.
func receiver(t *testing.T, answer func(n int, w http.ResponseWriter, r *http.Request)) (*httptest.Server, func() []received) {
	t.Helper()
	var mu sync.Mutex
	var got []received
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		got = append(got, received{r.Header.Clone(), b})
		n := len(got)
		mu.Unlock()
		answer(n, w, r)
	}))
	t.Cleanup(srv.Close)
	return srv, func() []received {
		mu.Lock()
		defer mu.Unlock()
		return append([]received(nil), got...)
	}
}

// verifySignature checks a Sluice-Signature header the way a receiver would.
func verifySignature(t *testing.T, header string, body []byte, sec string) {
	t.Helper()
	ts, sig, ok := strings.Cut(header, ",")
	ts, tsOK := strings.CutPrefix(ts, "t=")
	sig, sigOK := strings.CutPrefix(sig, "v1=")
	if !ok || !tsOK || !sigOK {
		t.Fatalf("Sluice-Signature = %q, want t=<unix>,v1=<hex>", header)
	}
	unix, err := strconv.ParseInt(ts, 10, 64)
	if err != nil || time.Since(time.Unix(unix, 0)).Abs() > time.Minute {
		t.Errorf("signature time %q is not a current unix time", ts)
	}
	mac := hmac.New(sha256.New, []byte(sec))
	mac.Write([]byte(ts + "." + string(body)))
	want := hex.EncodeToString(mac.Sum(nil))
	if !hmac.Equal([]byte(sig), []byte(want)) {
		t.Errorf("signature v1=%s, want %s", sig, want)
	}
}

func TestDispatcherDeliversSignedJobObject(t *testing.T) {
	t.Parallel()
	srv, got := receiver(t, func(_ int, w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusNoContent) })
	st := newFakeDeliveries()
	del := succeededDelivery("job_signed", srv.URL+"/hook?token=abc", time.Now())
	st.add(del)
	startDispatcher(t, DispatcherConfig{AllowPrivate: true, PollInterval: time.Hour}, st, nil)
	st.waitFor(t, "delivery recorded", func() bool { return st.delivered[del.Job.ID] != 0 })

	if st.delivered[del.Job.ID] != http.StatusNoContent || len(st.failed) != 0 {
		t.Errorf("delivered with %d, failures %v; want 204 and none", st.delivered[del.Job.ID], st.failed)
	}
	reqs := got()
	if len(reqs) != 1 {
		t.Fatalf("receiver got %d requests, want 1", len(reqs))
	}
	r := reqs[0]
	for h, want := range map[string]string{"Content-Type": "application/json", "User-Agent": "Sluice-Webhook/1",
		"Sluice-Job-Id": del.Job.ID} {
		if g := r.header.Get(h); g != want {
			t.Errorf("header %s = %q, want %q", h, g, want)
		}
	}
	verifySignature(t, r.header.Get("Sluice-Signature"), r.body, testSecret)
	var want bytes.Buffer
	_ = json.NewEncoder(&want).Encode(Object(&del.Job))
	if !bytes.Equal(r.body, want.Bytes()) {
		t.Errorf("body = %s\nwant the job object %s", r.body, want.Bytes())
	}
	var obj struct {
		ID, Object, Status string
		Usage              *struct {
			TotalTokens int64 `json:"total_tokens"`
		}
	}
	if err := json.Unmarshal(r.body, &obj); err != nil || obj.ID != del.Job.ID || obj.Object != "job" ||
		obj.Status != "succeeded" || obj.Usage == nil || obj.Usage.TotalTokens != 17 {
		t.Errorf("body decodes to %+v (err %v), want the succeeded job with 17 tokens", obj, err)
	}
	if strings.Contains(string(r.body), testSecret) {
		t.Error("body carries the webhook secret")
	}
}

func TestDispatcherFailedAttempts(t *testing.T) {
	t.Parallel()
	const retryBase = 10 * time.Second
	tests := []struct {
		name         string
		answer       func(w http.ResponseWriter, r *http.Request)
		allowPrivate bool
		age          time.Duration // since the delivery was created
		wantHits     int
		wantStatus   int
		wantErr      string
		wantGiveUp   bool
	}{
		{name: "5xx is retried", answer: status(http.StatusInternalServerError), allowPrivate: true, wantHits: 1,
			wantStatus: 500, wantErr: "HTTP 500"},
		{name: "4xx is retried", answer: status(http.StatusGone), allowPrivate: true, wantHits: 1,
			wantStatus: 410, wantErr: "HTTP 410"},
		{name: "redirect is not followed", answer: func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, "/elsewhere", http.StatusFound)
		}, allowPrivate: true, wantHits: 1, wantStatus: 302, wantErr: "HTTP 302"},
		{name: "hang times out", answer: func(_ http.ResponseWriter, r *http.Request) { <-r.Context().Done() },
			allowPrivate: true, wantHits: 1, wantErr: "no answer within 200ms"},
		{name: "private address refused at dial", answer: status(http.StatusOK), wantErr: ErrPrivateTarget.Error()},
		{name: "given up after a day", answer: status(http.StatusServiceUnavailable), allowPrivate: true,
			age: 25 * time.Hour, wantHits: 1, wantStatus: 503, wantErr: "HTTP 503", wantGiveUp: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv, got := receiver(t, func(_ int, w http.ResponseWriter, r *http.Request) { tt.answer(w, r) })
			st := newFakeDeliveries()
			del := succeededDelivery("job_"+strings.ReplaceAll(tt.name, " ", "_"), srv.URL+"/hook", time.Now().Add(-tt.age))
			st.add(del)
			began := time.Now()
			startDispatcher(t, DispatcherConfig{AllowPrivate: tt.allowPrivate, RetryBase: retryBase,
				AttemptTimeout: 200 * time.Millisecond, PollInterval: time.Hour}, st, nil)
			st.waitFor(t, "the attempt recorded", func() bool { return len(st.failed)+len(st.gaveUp) > 0 })

			if n := len(got()); n != tt.wantHits {
				t.Errorf("receiver hits = %d, want %d", n, tt.wantHits)
			}
			results := st.failed
			if tt.wantGiveUp {
				results = st.gaveUp
			}
			if len(results) != 1 || len(st.failed)+len(st.gaveUp) != 1 || len(st.delivered) != 0 {
				t.Fatalf("failed %v, gave up %v, delivered %v; want one %s", st.failed, st.gaveUp, st.delivered,
					map[bool]string{true: "give-up", false: "failure"}[tt.wantGiveUp])
			}
			r := results[0]
			if r.attempt != 1 || r.status != tt.wantStatus || !strings.Contains(r.errText, tt.wantErr) {
				t.Errorf("result = attempt %d status %d %q, want attempt 1 status %d containing %q",
					r.attempt, r.status, r.errText, tt.wantStatus, tt.wantErr)
			}
			if strings.Contains(r.errText, srv.URL) {
				t.Errorf("error text %q carries the URL", r.errText)
			}
			if !tt.wantGiveUp {
				if wait := r.next.Sub(began); wait < retryBase/2 || wait > retryBase+time.Second {
					t.Errorf("next attempt in %s, want %s..%s", wait, retryBase/2, retryBase)
				}
			}
		})
	}
}

func status(code int) func(http.ResponseWriter, *http.Request) {
	return func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(code) }
}

func TestDispatcherRetriesUntilDelivered(t *testing.T) {
	t.Parallel()
	srv, got := receiver(t, func(n int, w http.ResponseWriter, _ *http.Request) {
		if n < 3 {
			w.WriteHeader(http.StatusBadGateway)
		}
	})
	st := newFakeDeliveries()
	del := succeededDelivery("job_retry", srv.URL, time.Now())
	st.add(del)
	startDispatcher(t, DispatcherConfig{AllowPrivate: true, RetryBase: 20 * time.Millisecond, PollInterval: 10 * time.Millisecond},
		st, nil)
	st.waitFor(t, "delivery after two failures", func() bool { return st.delivered[del.Job.ID] != 0 })
	if len(st.failed) != 2 || st.failed[0].attempt != 1 || st.failed[1].attempt != 2 {
		t.Errorf("failures = %+v, want attempts 1 and 2", st.failed)
	}
	reqs := got()
	if len(reqs) != 3 {
		t.Fatalf("receiver got %d requests, want 3", len(reqs))
	}
	for _, r := range reqs {
		verifySignature(t, r.header.Get("Sluice-Signature"), r.body, testSecret)
	}
}

func TestDispatcherWakesOnDoneEvent(t *testing.T) {
	t.Parallel()
	_, nc := jobstest.NewConn(t)
	srv, _ := receiver(t, func(int, http.ResponseWriter, *http.Request) {})
	st := newFakeDeliveries()
	// No polling during the test: only the done event can start the delivery.
	startDispatcher(t, DispatcherConfig{AllowPrivate: true, PollInterval: time.Hour}, st, nc)
	st.waitFor(t, "the first claim", func() bool { return len(st.claims) == 1 })
	del := succeededDelivery("job_woken", srv.URL, time.Now())
	st.add(del)
	if err := nc.Publish(jobs.DonePrefix+del.Job.ID, nil); err != nil {
		t.Fatal(err)
	}
	st.waitFor(t, "delivery after the done event", func() bool { return st.delivered[del.Job.ID] == http.StatusOK })
}

func TestDispatcherClaimsOnlyForIdleSenders(t *testing.T) {
	t.Parallel()
	const concurrency, total = 2, 7
	release := make(chan struct{})
	var inFlight, peak atomic.Int64
	arrived := make(chan struct{}, total)
	srv, _ := receiver(t, func(_ int, w http.ResponseWriter, _ *http.Request) {
		n := inFlight.Add(1)
		defer inFlight.Add(-1)
		for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
		}
		arrived <- struct{}{}
		<-release
	})
	st := newFakeDeliveries()
	for i := range total {
		st.add(succeededDelivery("job_"+strconv.Itoa(i), srv.URL, time.Now()))
	}
	startDispatcher(t, DispatcherConfig{AllowPrivate: true, Concurrency: concurrency, PollInterval: 5 * time.Millisecond}, st, nil)
	for range concurrency {
		<-arrived
	}
	st.mu.Lock()
	handedOut, claims := st.handedOut, append([]int(nil), st.claims...)
	st.mu.Unlock()
	if handedOut != concurrency {
		t.Errorf("claimed %d deliveries while %d senders were busy, want %d", handedOut, concurrency, concurrency)
	}
	close(release)
	st.waitFor(t, "every delivery", func() bool {
		claims = append(claims, st.claims...) // called with the store locked
		return len(st.delivered) == total
	})
	for _, limit := range claims {
		if limit > concurrency {
			t.Errorf("a claim asked for %d deliveries, more than the %d senders", limit, concurrency)
		}
	}
	if p := peak.Load(); p != concurrency {
		t.Errorf("peak concurrent attempts = %d, want %d", p, concurrency)
	}
}

func TestBackoff(t *testing.T) {
	t.Parallel()
	d := NewDispatcher(DispatcherConfig{RetryBase: 10 * time.Second}, nil, nil, slog.New(slog.DiscardHandler))
	tests := []struct {
		attempt int
		max     time.Duration
	}{
		{1, 10 * time.Second},
		{2, 20 * time.Second},
		{4, 80 * time.Second},
		{12, time.Hour},
		{1000, time.Hour}, // no overflow however many attempts
	}
	for _, tt := range tests {
		for range 50 {
			if got := d.backoff(tt.attempt); got < tt.max/2 || got > tt.max {
				t.Errorf("backoff(%d) = %s, want %s..%s", tt.attempt, got, tt.max/2, tt.max)
			}
		}
	}
}

// TestDispatcherReportsAttempts_Issue14_2: AttemptFunc hears of every attempt, by outcome:
// two failures retried then a delivery, and a failure past GiveUpAfter abandoned.
func TestDispatcherReportsAttempts_Issue14_2(t *testing.T) {
	t.Parallel()
	srv, _ := receiver(t, func(n int, w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/dead" || n < 3 {
			w.WriteHeader(http.StatusBadGateway)
		}
	})
	st := newFakeDeliveries()
	st.add(succeededDelivery("job_retried", srv.URL+"/live", time.Now()))
	st.add(succeededDelivery("job_abandoned", srv.URL+"/dead", time.Now().Add(-25*time.Hour)))
	var mu sync.Mutex
	got := map[string]int{}
	startDispatcher(t, DispatcherConfig{AllowPrivate: true, RetryBase: 20 * time.Millisecond, PollInterval: 10 * time.Millisecond,
		AttemptFunc: func(o string) { mu.Lock(); got[o]++; mu.Unlock() }}, st, nil)
	st.waitFor(t, "both deliveries ended", func() bool { return st.delivered["job_retried"] != 0 && len(st.gaveUp) == 1 })
	mu.Lock()
	defer mu.Unlock()
	// /dead answers 502 on the receiver's first or second request too, so the live
	// delivery's failures number 1 or 2 (requests are counted across both paths).
	if got[OutcomeDelivered] != 1 || got[OutcomeAbandoned] != 1 || got[OutcomeRetrying] != len(st.failed) ||
		got[OutcomeRetrying] < 1 || len(got) != 3 {
		t.Errorf("attempts reported %v, want delivered 1, abandoned 1, retrying %d", got, len(st.failed))
	}
}
