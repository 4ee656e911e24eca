package ingress

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluicehq/sluice/internal/cli"
	"github.com/sluicehq/sluice/pkg/batches"
	"github.com/sluicehq/sluice/pkg/files"
	"github.com/sluicehq/sluice/pkg/jobs"
	"github.com/sluicehq/sluice/pkg/jobs/jobstest"
	"github.com/sluicehq/sluice/pkg/route"
	"github.com/sluicehq/sluice/pkg/secret"
	"github.com/sluicehq/sluice/pkg/store"
	"github.com/sluicehq/sluice/pkg/store/storetest"
)

// The keys and token a harness knows. Their secrets are in the key cache (so a fuzz seed
// can name them); their rows are real.
const (
	testAdminToken = "admin-token-for-ingress-tests-0123"
	// testKey may submit async jobs (with an Idempotency-Key: the harness runs no batching
	// queuer), which are stored and published to a real JetStream stream no worker reads.
	testKey = "sk-sl-test-usable-key-000000000000"
	// testBlockedKey has rpm 0: every request that passes validation ends in a 429 before
	// anything is published, so a fuzzer can never leave a request waiting on a worker.
	testBlockedKey = "sk-sl-test-blocked-key-00000000000"
	// testAllowKey has rpm 0 too, and may use only the model "m".
	testAllowKey = "sk-sl-test-allowlist-key-000000000"
)

// harness is the ingress's HTTP handler on real Postgres (a schema of its own) and a real
// embedded JetStream, with one fake channel serving the models "m" and "m-other".
type harness struct {
	t       testing.TB
	srv     *Server
	h       http.Handler
	st      *store.Store
	key     store.Key // testKey's row
	channel string    // the fake channel's id
}

func newHarness(t testing.TB) *harness {
	t.Helper()
	ctx := context.Background()
	db := storetest.New(t)
	_, nc := jobstest.NewConn(t)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := jobs.EnsureStream(ctx, js, jobs.QueueConfig{MaxJobs: 10_000, JobTimeout: time.Minute}); err != nil {
		t.Fatal(err)
	}
	mux, err := jobs.NewMux(nc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = mux.Close() })
	done, err := jobs.NewDoneHub(nc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = done.Close() })
	ch, err := db.Store.CreateChannel(ctx, store.ChannelParams{Name: "fake", Provider: "fake", BaseURL: "fake://",
		Models: []string{"m", "m-other"}, Weight: 1, Enabled: true})
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.DiscardHandler)
	router := route.NewRouter(db.Store, nil, log)
	if err := router.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	s := &Server{cfg: Config{AdminToken: secret.Secret(testAdminToken), Common: cli.Common{JobTimeout: time.Minute}},
		store: db.Store, nc: nc, pub: jobs.NewPublisher(nc, js, 5*time.Second), mux: mux, router: router, log: log,
		waiting: make(chan struct{}, 64), keys: &keyCache{ttl: 24 * time.Hour, m: map[string]cachedKey{}},
		maxBody: 64 << 10, done: done, files: files.New(db.Pool),
		batches: batches.New(db.Pool)}
	s.metrics = newMetrics(prometheus.NewRegistry(), func() float64 { return 0 })
	hs := &harness{t: t, srv: s, h: s.Handler(), st: db.Store, channel: ch.ID}
	zero := 0
	for _, k := range []struct {
		secret string
		p      store.KeyParams
	}{
		{testKey, store.KeyParams{Name: "usable"}},
		{testBlockedKey, store.KeyParams{Name: "blocked", RPM: &zero}},
		{testAllowKey, store.KeyParams{Name: "allowlist", RPM: &zero, Models: []string{"m"}}},
	} {
		row, _, err := db.Store.CreateKey(ctx, k.p)
		if err != nil {
			t.Fatal(err)
		}
		s.keys.put(k.secret, row, time.Now())
		if k.secret == testKey {
			hs.key = row
		}
	}
	return hs
}

// do serves one request; hdr holds header name, value pairs (a name may repeat).
func (hs *harness) do(method, target string, body any, hdr ...string) (*http.Response, []byte) {
	hs.t.Helper()
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
			hs.t.Fatal(err)
		}
		rd = bytes.NewReader(j)
	}
	req := httptest.NewRequest(method, target, rd)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Add(hdr[i], hdr[i+1])
	}
	rec := httptest.NewRecorder()
	hs.h.ServeHTTP(rec, req)
	res := rec.Result()
	b, _ := io.ReadAll(res.Body)
	return res, b
}

// admin serves an admin request with the admin token.
func (hs *harness) admin(method, target string, body any) (*http.Response, []byte) {
	hs.t.Helper()
	return hs.do(method, target, body, "Authorization", "Bearer "+testAdminToken)
}

// apiErrorBody is an OpenAI-shaped error body.
type apiErrorBody struct {
	Error struct {
		Message string  `json:"message"`
		Type    string  `json:"type"`
		Param   *string `json:"param"`
		Code    *string `json:"code"`
	} `json:"error"`
}

// wantError checks an answer is an API error with status and, if not empty, param and code.
func wantError(t *testing.T, res *http.Response, b []byte, status int, param, code string) {
	t.Helper()
	var e apiErrorBody
	if res.StatusCode != status || json.Unmarshal(b, &e) != nil || e.Error.Message == "" || e.Error.Type == "" {
		t.Fatalf("answer %d %s, want a %d API error", res.StatusCode, b, status)
	}
	if param != "" && (e.Error.Param == nil || *e.Error.Param != param) {
		t.Errorf("param in %s, want %q", b, param)
	}
	if code != "" && (e.Error.Code == nil || *e.Error.Code != code) {
		t.Errorf("code in %s, want %q", b, code)
	}
	if res.Header.Get("X-Request-Id") == "" {
		t.Errorf("no X-Request-Id on %d %s", res.StatusCode, b)
	}
}
