package webhook

import (
	"bytes"
	"cmp"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/sluicehq/sluice/pkg/batches"
	"github.com/sluicehq/sluice/pkg/httpbody"
	"github.com/sluicehq/sluice/pkg/jobs"
	"github.com/sluicehq/sluice/pkg/slots"
	"github.com/sluicehq/sluice/pkg/store"
)

// DeliveryStore is what the webhook dispatcher needs from Postgres.
type DeliveryStore interface {
	ClaimDeliveries(ctx context.Context, c store.DeliveryClaim) ([]store.Delivery, error)
	MarkDelivered(ctx context.Context, jobID string, status int) error
	MarkFailed(ctx context.Context, jobID string, attempt, status int, errText string, next time.Time) error
	GiveUp(ctx context.Context, jobID string, attempt, status int, errText string) error
}

// DispatcherConfig tunes a Dispatcher. Zero fields take the defaults noted.
type DispatcherConfig struct {
	Concurrency int // attempts in flight in this process (8)
	// PerKey caps one API key's attempts in flight in this process (2), so that one
	// tenant's slow or dead endpoint holds at most this many senders and the others keep
	// delivering; Concurrency or more means no cap. Deliveries are also claimed round robin
	// by key (store.ClaimDeliveries).
	PerKey         int
	PollInterval   time.Duration // how often to look for due deliveries when no job ends (1s)
	RetryBase      time.Duration // wait after the first failed attempt, doubled each time, with jitter (10s)
	RetryMax       time.Duration // cap on one wait (1h)
	GiveUpAfter    time.Duration // no attempt starts later than this after the delivery was created (24h)
	AttemptTimeout time.Duration // one POST, from dial to the end of the answer (10s)
	// Lease is how long a claimed delivery stays hidden from other dispatchers: a dispatcher
	// that dies mid-attempt hands it back after this long (1m; never under AttemptTimeout +
	// the time allowed to record the result, so a live attempt is never sent twice at once).
	Lease time.Duration
	// AllowPrivate lets deliveries reach loopback, private and link-local addresses
	// (WEBHOOK_ALLOW_PRIVATE). Otherwise the dialled address is checked on every connection.
	AllowPrivate bool
	// AttemptFunc, if set, is called after each attempt with how it came out: one of
	// Outcomes (metrics). It must not block.
	AttemptFunc func(outcome string)
}

// The outcomes of a delivery attempt, as AttemptFunc reports them.
const (
	OutcomeDelivered = "delivered" // the receiver answered 2xx
	OutcomeRetrying  = "retrying"  // it failed; another attempt is scheduled
	OutcomeAbandoned = "abandoned" // it failed and no attempt will follow (the URL is unusable, or GiveUpAfter passed)
)

// Outcomes lists every outcome AttemptFunc may report.
var Outcomes = []string{OutcomeDelivered, OutcomeRetrying, OutcomeAbandoned}

// recordTimeout bounds writing an attempt's result to Postgres.
const recordTimeout = 5 * time.Second

func (c DispatcherConfig) withDefaults() DispatcherConfig {
	c.Concurrency = cmp.Or(c.Concurrency, 8)
	c.PerKey = min(cmp.Or(c.PerKey, 2), c.Concurrency)
	c.PollInterval = cmp.Or(c.PollInterval, time.Second)
	c.RetryBase = cmp.Or(c.RetryBase, 10*time.Second)
	c.RetryMax = cmp.Or(c.RetryMax, time.Hour)
	c.GiveUpAfter = cmp.Or(c.GiveUpAfter, 24*time.Hour)
	c.AttemptTimeout = cmp.Or(c.AttemptTimeout, 10*time.Second)
	c.Lease = max(cmp.Or(c.Lease, time.Minute), c.AttemptTimeout+recordTimeout+5*time.Second)
	if c.AttemptFunc == nil {
		c.AttemptFunc = func(string) {}
	}
	return c
}

// Dispatcher POSTs the job object of every ended job that has a webhook URL to that URL,
// signed with the key's webhook secret, retrying with backoff until the receiver answers 2xx
// or GiveUpAfter has passed. Deliveries live in Postgres (store.Delivery), so any number of
// worker processes can each run a Dispatcher, and restarts lose nothing.
type Dispatcher struct {
	cfg       DispatcherConfig
	st        DeliveryStore
	nc        *nats.Conn
	http      *http.Client
	closeIdle func() // closes the client's idle connections
	log       *slog.Logger
}

// NewDispatcher returns a Dispatcher. nc wakes it when jobs end; it may be nil, and the
// dispatcher then finds deliveries by polling alone.
func NewDispatcher(cfg DispatcherConfig, st DeliveryStore, nc *nats.Conn, log *slog.Logger) *Dispatcher {
	cfg = cfg.withDefaults()
	dialer := &net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}
	if !cfg.AllowPrivate {
		dialer.Control = guardDial // the address actually dialled, after DNS, every time
	}
	tr := &http.Transport{
		Proxy:                 nil, // a proxy would be what guardDial checks, not the receiver
		DialContext:           dialer.DialContext,
		ForceAttemptHTTP2:     true,
		TLSHandshakeTimeout:   5 * time.Second,
		ResponseHeaderTimeout: cfg.AttemptTimeout,
		MaxIdleConnsPerHost:   2,
		IdleConnTimeout:       90 * time.Second,
	}
	client := &http.Client{Transport: tr, CheckRedirect: func(*http.Request, []*http.Request) error {
		return http.ErrUseLastResponse // a redirect is an answer (not 2xx), never followed
	}}
	return &Dispatcher{cfg: cfg, st: st, nc: nc, http: client, closeIdle: tr.CloseIdleConnections,
		log: log.With("component", "webhook")}
}

// Run delivers webhooks until ctx is done, then lets attempts in flight finish (each is
// bounded by AttemptTimeout) and returns once every goroutine it started has exited. It runs
// Concurrency sender goroutines and never claims more deliveries than there are idle
// senders, nor more of one key than PerKey less what that key has in flight. It looks for
// due deliveries whenever a job ends (one subscription to done events), whenever an attempt
// ends (a key at its cap may go on), and every PollInterval; if it cannot subscribe, it logs that
// and relies on the rest.
func (d *Dispatcher) Run(ctx context.Context) {
	wake := make(chan struct{}, 1)
	poke := func() {
		select {
		case wake <- struct{}{}:
		default: // a wake-up is already pending
		}
	}
	if d.nc != nil {
		sub, err := d.nc.Subscribe(jobs.DonePrefix+"*", func(*nats.Msg) { poke() })
		if err != nil {
			d.log.ErrorContext(ctx, "subscribe to done events; webhooks wait for the next poll", "err", err)
		} else {
			defer func() { _ = sub.Unsubscribe() }()
		}
	}
	defer d.closeIdle() // after the senders have stopped (defers run last-in first-out)

	// Attempts outlive ctx (bounded by AttemptTimeout), so that a shutdown does not cut a
	// receiver off mid-answer and leave the delivery to wait out its lease.
	sendCtx := context.WithoutCancel(ctx)
	work := make(chan store.Delivery)
	free := slots.New(d.cfg.Concurrency) // one token per idle sender
	busy := newKeyCounts()               // attempts in flight per key
	var senders sync.WaitGroup
	for range d.cfg.Concurrency {
		senders.Go(func() {
			for del := range work {
				d.deliver(sendCtx, del)
				busy.done(del.Job.KeyID)
				free.Put(1)
				// The last claim may have left this key's other due deliveries for its cap:
				// they may go now. (Wake-ups coalesce: at most one claim is pending.)
				poke()
			}
		})
	}
	defer func() { close(work); senders.Wait() }()

	tick := time.NewTicker(d.cfg.PollInterval)
	defer tick.Stop()
	for free.Take(ctx) {
		k := 1 + free.TakeIdle()
		dels, err := d.st.ClaimDeliveries(ctx, store.DeliveryClaim{Limit: k, Lease: d.cfg.Lease, PerKey: d.cfg.PerKey,
			Busy: busy.snapshot()})
		if err != nil && ctx.Err() == nil {
			d.log.WarnContext(ctx, "claim webhook deliveries", "err", err)
		}
		for _, del := range dels {
			busy.start(del.Job.KeyID)
			work <- del // k senders are idle, or about to be
		}
		free.Put(k - len(dels))
		switch {
		case len(dels) == k:
			continue // there may be more due right now
		case err != nil:
			slots.Sleep(ctx, d.cfg.PollInterval) // Postgres away: don't spin on every done event
			continue
		}
		select {
		case <-ctx.Done():
		case <-wake:
		case <-tick.C:
		}
	}
}

// keyCounts counts attempts in flight per key, shared by the claim loop and the senders.
type keyCounts struct {
	mu sync.Mutex
	n  map[string]int
}

func newKeyCounts() *keyCounts { return &keyCounts{n: map[string]int{}} }

func (c *keyCounts) start(key string) {
	c.mu.Lock()
	c.n[key]++
	c.mu.Unlock()
}

// done counts one attempt of key finished.
func (c *keyCounts) done(key string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n[key] <= 1 {
		delete(c.n, key) // the map holds only keys in flight: at most Concurrency entries
		return
	}
	c.n[key]--
}

// snapshot copies the counts, for a claim.
func (c *keyCounts) snapshot() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return maps.Clone(c.n)
}

// deliver makes one attempt and records its result. It never logs the body or the secret.
func (d *Dispatcher) deliver(ctx context.Context, del store.Delivery) {
	log := d.log.With("job_id", del.Job.ID, "key_id", del.Job.KeyID, "attempt", del.Attempt)
	began := time.Now()
	status, err := d.post(ctx, del)
	elapsed := time.Since(began)
	rctx, cancel := context.WithTimeout(ctx, recordTimeout)
	defer cancel()
	if err == nil && status/100 == 2 {
		d.cfg.AttemptFunc(OutcomeDelivered)
		if err := d.st.MarkDelivered(rctx, del.Job.ID, status); err != nil {
			// The lease runs out and the receiver gets the job again: at least once.
			log.WarnContext(ctx, "record webhook delivery", "err", err)
			return
		}
		log.InfoContext(ctx, "webhook delivered", "status", status, "elapsed", elapsed)
		return
	}
	errText := fmt.Sprintf("receiver answered HTTP %d", status)
	if err != nil {
		errText = err.Error()
	}
	giveUpAt := del.CreatedAt.Add(d.cfg.GiveUpAfter)
	if errors.Is(err, errBadURL) || !time.Now().Before(giveUpAt) {
		d.cfg.AttemptFunc(OutcomeAbandoned)
		if err := d.st.GiveUp(rctx, del.Job.ID, del.Attempt, status, errText); err != nil {
			log.WarnContext(ctx, "record webhook give-up", "err", err)
			return
		}
		log.ErrorContext(ctx, "webhook delivery abandoned", "status", status, "err", errText,
			"since", time.Since(del.CreatedAt).Round(time.Second))
		return
	}
	d.cfg.AttemptFunc(OutcomeRetrying)
	next := time.Now().Add(d.backoff(del.Attempt))
	if next.After(giveUpAt) {
		next = giveUpAt // one last try at the give-up time
	}
	if err := d.st.MarkFailed(rctx, del.Job.ID, del.Attempt, status, errText, next); err != nil {
		log.WarnContext(ctx, "record webhook failure", "err", err)
		return
	}
	log.WarnContext(ctx, "webhook attempt failed; retrying", "status", status, "err", errText, "elapsed", elapsed,
		"retry_in", time.Until(next).Round(time.Millisecond))
}

// errBadURL means the stored webhook URL cannot make a request: no retry can help.
var errBadURL = errors.New("webhook URL is not usable")

// post sends the signed job object and returns the receiver's status. Errors never carry
// the URL, which may hold the receiver's own credentials.
func (d *Dispatcher) post(ctx context.Context, del store.Delivery) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, d.cfg.AttemptTimeout)
	defer cancel()
	var body bytes.Buffer
	event := del.Job.Endpoint == batches.EventEndpoint // a batch's event: its stored body is what is sent
	if event {
		body.Write(del.Job.Response)
		body.WriteByte('\n')
	} else if err := json.NewEncoder(&body).Encode(Object(&del.Job)); err != nil {
		// Encoded exactly as the ingress writes GET /v1/jobs/{id}, trailing newline included.
		return 0, fmt.Errorf("encode job object: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, del.URL, bytes.NewReader(body.Bytes()))
	if err != nil {
		return 0, errBadURL
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "Sluice-Webhook/1")
	if event {
		req.Header.Set("Sluice-Event-Id", del.Job.ID)
	} else {
		req.Header.Set("Sluice-Job-Id", del.Job.ID)
	}
	req.Header.Set("Sluice-Signature", sign(del.Secret.Reveal(), time.Now().Unix(), body.Bytes()))
	resp, err := d.http.Do(req) //nolint:bodyclose // released by httpbody.Close, the one release helper
	if err != nil {
		if uerr, ok := errors.AsType[*url.Error](err); ok {
			err = uerr.Err
		}
		if errors.Is(err, context.DeadlineExceeded) {
			return 0, fmt.Errorf("no answer within %s", d.cfg.AttemptTimeout)
		}
		return 0, err
	}
	defer httpbody.Close(resp)
	return resp.StatusCode, nil
}

// sign returns the Sluice-Signature header value for body sent at unix time t:
// "t=<t>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>".
func sign(secret string, t int64, body []byte) string {
	ts := strconv.FormatInt(t, 10)
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write([]byte(ts))
	mac.Write([]byte("."))
	mac.Write(body)
	return "t=" + ts + ",v1=" + hex.EncodeToString(mac.Sum(nil))
}

// backoff is the wait after failed attempt n (from 1): RetryBase doubled n-1 times, capped at
// RetryMax, with jitter in [d/2, d] so that receivers coming back are not hit all at once.
func (d *Dispatcher) backoff(n int) time.Duration {
	w := d.cfg.RetryBase
	for i := 1; i < n && w < d.cfg.RetryMax; i++ { // doubling in a loop cannot overflow
		w *= 2
	}
	w = min(w, d.cfg.RetryMax)
	return w/2 + rand.N(w/2+1)
}
