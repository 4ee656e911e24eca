package ingress

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"regexp"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/singleflight"

	"github.com/sluicehq/sluice/pkg/batches"
	"github.com/sluicehq/sluice/pkg/files"
	"github.com/sluicehq/sluice/pkg/ids"
	"github.com/sluicehq/sluice/pkg/jobs"
	"github.com/sluicehq/sluice/pkg/route"
	"github.com/sluicehq/sluice/pkg/store"
	"github.com/sluicehq/sluice/pkg/telemetry"
)

// Server holds the HTTP API's dependencies.
type Server struct {
	cfg   Config
	store *store.Store
	nc    *nats.Conn
	pub   *jobs.Publisher
	// outcomes holds the outcomes workers recorded but settlers have not yet written to
	// Postgres; answers read from the store look there first. Nil in some tests.
	outcomes *jobs.Outcomes
	mux      *jobs.Mux
	router   *route.Router
	log      *slog.Logger
	waiting  chan struct{} // one token per request waiting on a job
	keys     *keyCache
	metrics  *metrics
	maxBody  int64
	done     *jobs.DoneHub
	queue    *queuer
	// files stores the Batch API's files (pkg/files).
	files *files.Store
	// batches stores batches (pkg/batches); the workers run them.
	batches *batches.Store
	// uploads holds a token per upload in progress (takeUpload); nil: no cap.
	uploads chan struct{}
	// inFlight counts handlers running, so shutdown can wait for them before closing
	// what they use.
	inFlight atomic.Int64
	// reads holds a token per job read in progress (readSlots).
	reads     chan struct{}
	readsOnce sync.Once
	// cache is the response cache; nil when CACHE_MAX_BYTES is 0.
	cache *respCache
	// clock, if set, replaces time.Now for rate windows and budget periods (tests).
	clock func() time.Time
	// tracer starts the request's spans; nil: tracing is off (tracing.go).
	tracer *telemetry.Tracer
}

// now is the time by s's clock.
func (s *Server) now() time.Time {
	if s.clock != nil {
		return s.clock()
	}
	return time.Now()
}

type metrics struct {
	requests *prometheus.CounterVec
	latency  *prometheus.HistogramVec
	waiting  prometheus.GaugeFunc
}

func newMetrics(reg prometheus.Registerer, waiting func() float64) *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_ingress_requests_total", Help: "HTTP requests by route and status.",
		}, []string{"route", "code"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "sluice_ingress_request_duration_seconds", Help: "HTTP request latency by route.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300, 900},
		}, []string{"route"}),
		waiting: prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "sluice_ingress_waiting_requests", Help: "Requests waiting on a job now.",
		}, waiting),
	}
	reg.MustRegister(m.requests, m.latency, m.waiting)
	return m
}

// Handler returns the HTTP API of the public listener: /admin and /console/ too, unless
// ADMIN_ADDR moves them.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	route := func(pattern string, h http.HandlerFunc) {
		mux.Handle(pattern, s.traced(pattern, s.instrument(pattern, s.checkInput(pattern, h))))
	}
	route("POST /v1/chat/completions", s.relay(jobs.EndpointChat))
	route("POST /v1/completions", s.relay(jobs.EndpointCompletions))
	route("POST /v1/embeddings", s.relay(jobs.EndpointEmbeddings))
	route("POST /v1/messages", s.relay(jobs.EndpointMessages))
	route("POST /v1/responses", s.relay(jobs.EndpointResponses))
	route("GET /v1/models", s.models)
	route("POST /v1/jobs", s.submitJob)
	route("GET /v1/jobs", s.listJobs)
	route("GET /v1/jobs/{id}", s.getJob)
	route("POST /v1/jobs/{id}/cancel", s.cancelJob)
	route("POST /v1/files", s.uploadFile)
	route("GET /v1/files", s.listFiles)
	route("GET /v1/files/{id}", s.getFile)
	route("GET /v1/files/{id}/content", s.fileContent)
	route("DELETE /v1/files/{id}", s.deleteFile)
	route("POST /v1/batches", s.createBatch)
	route("GET /v1/batches", s.listBatches)
	route("GET /v1/batches/{id}", s.getBatch)
	route("POST /v1/batches/{id}/cancel", s.cancelBatch)
	route("POST /v1/messages/batches", s.createMessageBatch)
	route("GET /v1/messages/batches", s.listMessageBatches)
	route("GET /v1/messages/batches/{id}", s.getMessageBatch)
	route("GET /v1/messages/batches/{id}/results", s.messageBatchResults)
	route("POST /v1/messages/batches/{id}/cancel", s.cancelMessageBatch)
	route("DELETE /v1/messages/batches/{id}", s.deleteMessageBatch)
	route("GET /healthz", s.healthz)
	route("GET /readyz", s.readyz)
	if s.cfg.AdminAddr == "" { // else on a listener of its own (openListeners)
		s.adminRoutes(route)
		s.consoleRoutes(mux)
	}
	mux.Handle("/", s.instrument("other", s.notFound))
	return s.guardWrites(s.withRequestID(s.recoverPanics(mux)))
}

func (s *Server) notFound(w http.ResponseWriter, r *http.Request) {
	s.writeError(w, r, apiError(http.StatusNotFound, "invalid_request_error", "unknown_url",
		fmt.Sprintf("Unknown request URL: %s %s.", r.Method, r.URL.Path)))
}

func (s *Server) healthz(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	checks := map[string]string{"nats": "ok", "postgres": "ok"}
	ok := true
	if !s.nc.IsConnected() {
		checks["nats"], ok = "unavailable", false
	}
	if err := s.store.Ping(ctx); err != nil {
		checks["postgres"], ok = "unavailable", false
	}
	if !ok {
		w.Header().Set("Retry-After", "1")
		writeJSON(w, http.StatusServiceUnavailable, map[string]any{"status": "unavailable", "checks": checks})
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"status": "ok", "checks": checks})
}

// statusRecorder remembers the status for metrics and passes Flush through for SSE.
type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (r *statusRecorder) WriteHeader(code int) {
	if r.status == 0 {
		r.status = code
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *statusRecorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	return r.ResponseWriter.Write(b)
}

func (r *statusRecorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

func (s *Server) instrument(route string, h http.HandlerFunc) http.Handler {
	lat := s.metrics.latency.WithLabelValues(route)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.inFlight.Add(1)
		defer s.inFlight.Add(-1)
		began := time.Now()
		rec := &statusRecorder{ResponseWriter: w}
		h(rec, r)
		lat.Observe(time.Since(began).Seconds())
		s.metrics.requests.WithLabelValues(route, fmt.Sprint(rec.status)).Inc()
	})
}

var requestIDPattern = regexp.MustCompile(`^[A-Za-z0-9._:-]{1,128}$`)

func (s *Server) withRequestID(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := r.Header.Get("X-Request-Id")
		if !requestIDPattern.MatchString(id) {
			id = ids.New("req")
		}
		w.Header().Set("X-Request-Id", id)
		next.ServeHTTP(w, r)
	})
}

func (s *Server) recoverPanics(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			if v := recover(); v != nil {
				if err, ok := v.(error); ok && errors.Is(err, http.ErrAbortHandler) {
					panic(v)
				}
				s.log.ErrorContext(r.Context(), "handler panicked", "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
				s.writeError(w, r, fmt.Errorf("panic: %v", v))
			}
		}()
		next.ServeHTTP(w, r)
	})
}

// keyCache remembers recent key lookups for ttl, so a hot key costs no query per request.
type keyCache struct {
	ttl    time.Duration
	mu     sync.Mutex
	m      map[string]cachedKey
	flight singleflight.Group
}

type cachedKey struct {
	key store.Key
	exp time.Time
	// stale is set once the entry is served past its ttl (Postgres unavailable); staleSince
	// is when its ttl ran out, which bounds how long it may be served so.
	stale      bool
	staleSince time.Time
}

const keyCacheMax = 100_000

// keyStaleMax is how long past its ttl a cached key still authenticates while Postgres cannot
// be asked, so that sync calls of recent callers go on through an outage (their outcomes wait
// in the outcomes stream). A stale key is re-asked for at most once per keyStaleRetry.
const (
	keyStaleMax   = 15 * time.Minute
	keyStaleRetry = time.Second
)

func (c *keyCache) get(secret string, now time.Time) (store.Key, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[secret]
	if !ok || now.After(e.exp) {
		return store.Key{}, false
	}
	return e.key, true
}

// stale returns an expired entry still within keyStaleMax of its expiry and keeps it for
// keyStaleRetry more, for use when Postgres is unavailable.
func (c *keyCache) stale(secret string, now time.Time) (store.Key, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[secret]
	if !ok || now.After(e.exp.Add(keyStaleMax)) {
		return store.Key{}, false
	}
	if !e.stale {
		e.stale, e.staleSince = true, e.exp
	}
	if now.After(e.staleSince.Add(keyStaleMax)) {
		return store.Key{}, false
	}
	e.exp = now.Add(keyStaleRetry)
	c.m[secret] = e
	return e.key, true
}

func (c *keyCache) put(secret string, k store.Key, now time.Time) {
	if c.ttl <= 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.m) >= keyCacheMax {
		clear(c.m) // crude but bounded; the next requests repopulate it
	}
	c.m[secret] = cachedKey{key: k, exp: now.Add(c.ttl)}
}

// forget drops a key from the cache (after an admin change in this process).
func (c *keyCache) forget(keyID string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for s, e := range c.m {
		if e.key.ID == keyID {
			delete(c.m, s)
		}
	}
}

// errAmbiguousCredential answers a request that names its caller more than once, in ways
// that disagree: which one to check would be a guess, and a guess is how a front proxy and
// Sluice come to see different callers.
var errAmbiguousCredential = apiError(http.StatusBadRequest, "invalid_request_error", "ambiguous_credentials",
	"Send one credential: a single 'Authorization: Bearer …' header, or a single x-api-key header (the same key if both).")

// credential returns the caller's token: the Bearer token of the Authorization header or,
// when apiKeyHeader allows it (the /v1 routes, for Anthropic clients), the x-api-key
// header. It returns "" if there is none (or Authorization is not a Bearer token), and
// errAmbiguousCredential for two Authorization or two x-api-key headers, or for an
// x-api-key that differs from the Authorization token.
func credential(r *http.Request, apiKeyHeader bool) (string, error) {
	auths, keys := r.Header.Values("Authorization"), r.Header.Values("X-Api-Key")
	if len(auths) > 1 || len(keys) > 1 {
		return "", errAmbiguousCredential
	}
	tok := ""
	if len(auths) == 1 {
		scheme, t, ok := strings.Cut(auths[0], " ")
		if ok && strings.EqualFold(scheme, "Bearer") {
			tok = strings.TrimSpace(t)
		}
	}
	if len(keys) == 1 {
		k := strings.TrimSpace(keys[0])
		switch {
		case len(auths) == 1 && k != tok:
			return "", errAmbiguousCredential
		case apiKeyHeader:
			tok = k
		}
	}
	return tok, nil
}

// authenticate returns the caller's usable key, or the 401 of API.md.
func (s *Server) authenticate(r *http.Request) (store.Key, error) {
	tok, err := credential(r, true)
	if err != nil {
		return store.Key{}, err
	}
	if !strings.HasPrefix(tok, "sk-sl-") || len(tok) > 128 {
		return store.Key{}, errInvalidKey
	}
	now := time.Now()
	k, ok := s.keys.get(tok, now)
	if !ok {
		// One lookup per key at a time: when a hot key's entry expires, its concurrent
		// requests share one query instead of each taking a connection.
		v, err, _ := s.keys.flight.Do(string(store.HashKey(tok)), func() (any, error) {
			// Not the first caller's context: its going away must not fail the others.
			ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), 5*time.Second)
			defer cancel()
			k, err := s.store.KeyBySecret(ctx, tok)
			if err == nil {
				s.keys.put(tok, k, now)
			}
			return k, err
		})
		if errors.Is(err, store.ErrNotFound) {
			return store.Key{}, errInvalidKey
		}
		if err == nil {
			k = v.(store.Key)
		} else { // Postgres cannot be asked: a recently cached key still authenticates
			stale, ok := s.keys.stale(tok, now)
			if !ok {
				return store.Key{}, errDBUnavailable()
			}
			k = stale
		}
	}
	if !k.Usable(now) {
		return store.Key{}, errInvalidKey
	}
	return k, nil
}

// errInvalidAdminToken is the 401 of the admin routes.
var errInvalidAdminToken = apiError(http.StatusUnauthorized, "authentication_error", "invalid_admin_token",
	"Missing or incorrect admin token. Send it as 'Authorization: Bearer <admin token>'.")

// checkAdmin checks the admin token in constant time. The token is taken only from
// Authorization: Bearer, never from x-api-key: no admin client needs that header, and a
// header proxies and SDKs treat as an ordinary API key should not carry the operator's
// credential. It returns errInvalidAdminToken or errAmbiguousCredential.
func (s *Server) checkAdmin(r *http.Request) error {
	tok, err := credential(r, false)
	if err != nil {
		return err
	}
	if tok == "" || subtle.ConstantTimeCompare([]byte(tok), []byte(s.cfg.AdminToken.Reveal())) != 1 {
		return errInvalidAdminToken
	}
	return nil
}
