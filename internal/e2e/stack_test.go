package e2e

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/sluicehq/sluice/internal/cli"
	"github.com/sluicehq/sluice/internal/ingress"
	"github.com/sluicehq/sluice/internal/worker"
	"github.com/sluicehq/sluice/pkg/jobs/jobstest"
	"github.com/sluicehq/sluice/pkg/secret"
	"github.com/sluicehq/sluice/pkg/store/storetest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		goleak.IgnoreTopFunction("github.com/jackc/pgx/v5/pgxpool.(*Pool).backgroundHealthCheck"),
		// The fault upstream's keep-alive connections close a moment after the test's client does.
		goleak.IgnoreTopFunction("net/http.(*persistConn).readLoop"),
		goleak.IgnoreTopFunction("net/http.(*persistConn).writeLoop"),
		goleak.IgnoreTopFunction("internal/poll.runtime_pollWait"),
	)
}

const adminToken = "test-admin-token-0123456789"

// stack is one test's Sluice: a Postgres schema, an embedded NATS, a worker and an ingress,
// each run in-process through its package's Run.
type stack struct {
	t     *testing.T
	db    *storetest.Bundle
	nats  *jobstest.Server
	base  string // ingress base URL
	ops   string // worker ops base URL
	http  *http.Client
	stopW func()
	stopI func()
	wcfg  worker.Config
	icfg  ingress.Config
	tune  func(*worker.PoolConfig)
}

type stackOpts struct {
	concurrency int
	jobTimeout  time.Duration
	idleTimeout time.Duration
	ackWait     time.Duration
	maxBody     int64
	maxWaiting  int
	hookRetry   time.Duration // the worker's WEBHOOK_RETRY_BASE (10s when zero)
	noPrivate   bool          // ingress and worker refuse loopback/private webhook URLs
	tune        func(*worker.PoolConfig)
	noWorker    bool    // the test starts its own workers
	keyShare    float64 // WORKER_KEY_SHARE; 0: 1 (off), since most tests use one key
	h2c         bool    // INGRESS_H2C and UPSTREAM_H2C
	// defaults runs both binaries with their default settings, as parsed from an environment
	// holding only what is required (the other options are ignored).
	defaults bool
	// natsURL, if set, is a NATS (cluster) the stack uses instead of a server of its own,
	// with replicas as QUEUE_REPLICAS.
	natsURL  string
	replicas int
}

func newStack(t *testing.T, o stackOpts) *stack {
	t.Helper()
	s := &stack{t: t, db: storetest.New(t),
		http: &http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 64}}}
	natsURL := o.natsURL
	if natsURL == "" {
		s.nats = jobstest.NewServer(t)
		natsURL = s.nats.URL
	}
	t.Cleanup(s.http.CloseIdleConnections)
	if o.concurrency == 0 {
		o.concurrency = 8
	}
	if o.jobTimeout == 0 {
		o.jobTimeout = 30 * time.Second
	}
	if o.idleTimeout == 0 {
		o.idleTimeout = 20 * time.Second
	}
	if o.ackWait == 0 {
		o.ackWait = 30 * time.Second
	}
	if o.maxBody == 0 {
		o.maxBody = 256 << 10
	}
	if o.maxWaiting == 0 {
		o.maxWaiting = 512
	}
	s.tune = o.tune
	s.wcfg = worker.Config{Common: cli.Common{DatabaseURL: secret.Secret(s.db.URL), NATSURL: secret.Secret(natsURL),
		EncryptionKey: secret.Secret(s.db.EncryptionKey), JobTimeout: o.jobTimeout, QueueMaxJobs: 10_000, QueueReplicas: o.replicas,
		ShutdownGrace: 5 * time.Second, ChannelRefresh: time.Second, DBMaxConns: 8, WebhookAllowPrivate: !o.noPrivate},
		Concurrency: o.concurrency, IdleTimeout: o.idleTimeout, MaxAttempts: 3, IdleConnTimeout: 90 * time.Second,
		MaxResponseBytes: 64 << 20, AckWait: o.ackWait, MaxAckPending: 1024, Retention: 24 * time.Hour,
		WebhookRetryBase: o.hookRetry, UpstreamH2C: o.h2c, KeyShare: cmp.Or(o.keyShare, 1)}
	if o.defaults {
		required := map[string]string{"DATABASE_URL": s.db.URL, "NATS_URL": s.nats.URL,
			"SLUICE_ENCRYPTION_KEY": s.db.EncryptionKey, "SLUICE_ADMIN_TOKEN": adminToken,
			"WEBHOOK_ALLOW_PRIVATE": "true"}
		s.wcfg = worker.Config{}
		if err := cli.Load(&s.wcfg, required); err != nil {
			t.Fatal(err)
		}
	}
	if !o.noWorker {
		s.ops, s.stopW = s.startWorker()
	}
	icfg := ingress.Config{Common: cli.Common{DatabaseURL: secret.Secret(s.db.URL), NATSURL: secret.Secret(natsURL),
		EncryptionKey: secret.Secret(s.db.EncryptionKey), JobTimeout: o.jobTimeout, ChannelRefresh: time.Second, QueueReplicas: o.replicas,
		ShutdownGrace: 5 * time.Second, QueueMaxJobs: 10_000, DBMaxConns: 8, WebhookAllowPrivate: !o.noPrivate},
		AdminToken: adminToken, MaxBodyBytes: o.maxBody, MaxWaiting: o.maxWaiting, MaxConns: 4 * o.maxWaiting,
		KeyCacheTTL: 10 * time.Second, H2C: o.h2c}
	if o.defaults {
		icfg = ingress.Config{}
		if err := cli.Load(&icfg, map[string]string{"DATABASE_URL": s.db.URL, "NATS_URL": s.nats.URL,
			"SLUICE_ENCRYPTION_KEY": s.db.EncryptionKey, "SLUICE_ADMIN_TOKEN": adminToken,
			"WEBHOOK_ALLOW_PRIVATE": "true"}); err != nil {
			t.Fatal(err)
		}
	}
	s.icfg = icfg
	s.base, s.stopI = s.startIngress()
	return s
}

// startIngress starts one more ingress process-equivalent on the same stack; it returns
// its base URL and a stop function.
func (s *stack) startIngress() (string, func()) {
	var addr string
	stop := run(s.t, "ingress", func(ctx context.Context, ln net.Listener, ready func(string)) error {
		return ingress.Run(ctx, s.icfg, testLogger(s.t), ingress.Options{Listener: ln, Ready: ready})
	}, &addr)
	return "http://" + addr, stop
}

// startWorker starts one more worker process-equivalent; the returned func stops it.
func (s *stack) startWorker() (opsURL string, stop func()) {
	var addr string
	stop = run(s.t, "worker", func(ctx context.Context, ln net.Listener, ready func(string)) error {
		return worker.Run(ctx, s.wcfg, testLogger(s.t), worker.Options{Listener: ln, Ready: ready, Tune: s.tune})
	}, &addr)
	return "http://" + addr, stop
}

// run starts fn on a loopback listener, waits until it is ready, and returns a stop
// function (also registered as cleanup) that cancels it and waits for it to return.
func run(t *testing.T, name string, fn func(context.Context, net.Listener, func(string)) error, addr *string) func() {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan string, 1)
	errc := make(chan error, 1)
	go func() { errc <- fn(ctx, ln, func(a string) { ready <- a }) }()
	select {
	case *addr = <-ready:
	case err := <-errc:
		cancel()
		t.Fatalf("%s exited at start: %v", name, err)
	case <-time.After(30 * time.Second):
		cancel()
		t.Fatalf("%s not ready after 30s", name)
	}
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-errc:
				if err != nil {
					t.Errorf("%s: %v", name, err)
				}
			case <-time.After(30 * time.Second):
				t.Errorf("%s did not stop within 30s", name)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

func testLogger(t *testing.T) *slog.Logger {
	t.Helper()
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
}

// do sends a request and returns the response with its body read.
func (s *stack) do(method, path, token string, body any, hdr ...string) (*http.Response, []byte) {
	s.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = bytes.NewReader([]byte(b))
	case []byte:
		rd = bytes.NewReader(b)
	default:
		j, err := json.Marshal(b)
		if err != nil {
			s.t.Fatal(err)
		}
		rd = bytes.NewReader(j)
	}
	req, err := http.NewRequest(method, s.base+path, rd)
	if err != nil {
		s.t.Fatal(err)
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := s.http.Do(req)
	if err != nil {
		s.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		s.t.Fatalf("%s %s: read body: %v", method, path, err)
	}
	return resp, b
}

// admin calls an admin route and decodes a 2xx answer into out.
func (s *stack) admin(method, path string, body, out any) {
	s.t.Helper()
	resp, b := s.do(method, path, adminToken, body)
	if resp.StatusCode/100 != 2 {
		s.t.Fatalf("%s %s = %d %s", method, path, resp.StatusCode, b)
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			s.t.Fatalf("%s %s: %v", method, path, err)
		}
	}
}

type createdKey struct {
	ID            string `json:"id"`
	Key           string `json:"key"`
	WebhookSecret string `json:"webhook_secret"`
}

func (s *stack) newKey(params map[string]any) createdKey {
	s.t.Helper()
	if params == nil {
		params = map[string]any{"name": "test"}
	}
	var k createdKey
	s.admin(http.MethodPost, "/admin/v1/keys", params, &k)
	return k
}

// channel adds an upstream channel and waits until the worker routes to it.
func (s *stack) channel(body map[string]any) string {
	s.t.Helper()
	if _, ok := body["name"]; !ok {
		body["name"] = "ch"
	}
	var ch struct {
		ID string `json:"id"`
	}
	s.admin(http.MethodPost, "/admin/v1/channels", body, &ch)
	return ch.ID
}

func (s *stack) price(model string, in, out float64) {
	s.t.Helper()
	s.admin(http.MethodPut, "/admin/v1/prices/"+model, map[string]any{"input_usd_per_1m": in, "output_usd_per_1m": out}, nil)
}

// apiErr decodes an OpenAI-shaped error body.
func apiErr(t *testing.T, b []byte) (typ, code, msg string) {
	t.Helper()
	var e struct {
		Error struct {
			Type    string  `json:"type"`
			Code    *string `json:"code"`
			Message string  `json:"message"`
		} `json:"error"`
	}
	if err := json.Unmarshal(b, &e); err != nil || e.Error.Message == "" {
		t.Fatalf("body is not an API error: %s", b)
	}
	if e.Error.Code != nil {
		code = *e.Error.Code
	}
	return e.Error.Type, code, e.Error.Message
}

// eventually polls cond every 20ms until it is true or d passes.
func eventually(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func chatBody(model, text string) map[string]any {
	return map[string]any{"model": model, "messages": []map[string]any{{"role": "user", "content": text}}}
}

// workerEnv is the environment of a worker process for this stack.
func (s *stack) workerEnv(addr string, concurrency int) map[string]string {
	return map[string]string{
		"DATABASE_URL": s.db.URL, "NATS_URL": s.wcfg.NATSURL.Reveal(), "SLUICE_ENCRYPTION_KEY": s.db.EncryptionKey,
		"QUEUE_REPLICAS": fmt.Sprint(max(s.wcfg.QueueReplicas, 1)),
		"WORKER_ADDR":    addr, "WORKER_CONCURRENCY": fmt.Sprint(concurrency), "JOB_TIMEOUT": s.wcfg.JobTimeout.String(),
		"UPSTREAM_IDLE_TIMEOUT": s.wcfg.IdleTimeout.String(), "JOB_ACK_WAIT": s.wcfg.AckWait.String(),
		// As in-process workers, which leave it unset: the first byte waits as long as idle.
		"UPSTREAM_FIRST_BYTE_TIMEOUT": cmp.Or(s.wcfg.FirstByteTimeout, s.wcfg.IdleTimeout).String(),
		"CHANNEL_REFRESH":             "1s", "SHUTDOWN_GRACE": "5s", "LOG_LEVEL": "warn", "WEBHOOK_ALLOW_PRIVATE": "true",
		"WORKER_KEY_SHARE": fmt.Sprint(s.wcfg.KeyShare),
	}
}
