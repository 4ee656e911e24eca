package ingress

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/otel/trace"

	"github.com/sluicehq/sluice/internal/cli"
	"github.com/sluicehq/sluice/pkg/batches"
	"github.com/sluicehq/sluice/pkg/files"
	"github.com/sluicehq/sluice/pkg/jobs"
	"github.com/sluicehq/sluice/pkg/route"
	"github.com/sluicehq/sluice/pkg/store"
	"github.com/sluicehq/sluice/pkg/telemetry"
)

// Options are what tests may add to Run.
type Options struct {
	// Listener, if set, is served instead of listening on cfg.Addr.
	Listener net.Listener
	// Ready, if set, is called with the served address once the API accepts requests.
	Ready func(addr string)
	// Now, if set, is the clock rate windows and budget periods are read by (tests move it
	// forward instead of waiting a day).
	Now func() time.Time
	// TracerProvider, if set, replaces the one the OTEL_* environment makes (telemetry.Setup).
	TracerProvider trace.TracerProvider
}

// Run serves the ingress until ctx is done, then shuts down gracefully: it stops accepting,
// gives in-flight requests ShutdownGrace, and closes NATS and Postgres last.
// pubTimeout bounds a JetStream publish, its retries included: a try whose ack does not
// come is repeated (same Nats-Msg-Id, so deduplicated) for up to this long, which covers a
// cluster electing a new stream leader (Raft's election timeout is 4-9 s). Past it the caller
// gets 503 with Retry-After.
const pubTimeout = 10 * time.Second

// h2cStreams caps concurrent requests on one h2c connection (INGRESS_H2C).
const h2cStreams = 100

func Run(ctx context.Context, cfg Config, log *slog.Logger, opts Options) error {
	log = log.With("component", "ingress")
	tp, shutdownTracing, err := telemetry.Setup(ctx, "sluice-ingress", log)
	if err != nil {
		return err
	}
	defer func() { // last: spans of the requests drained at shutdown are flushed too
		if err := shutdownTracing(context.WithoutCancel(ctx)); err != nil {
			log.Warn("tracing shutdown", "err", err)
		}
	}()
	if opts.TracerProvider != nil {
		tp = opts.TracerProvider
	}
	sealer, err := store.NewSealer(cfg.EncryptionKey.Reveal(), cfg.EncryptionKeysOld.Reveal()...)
	if err != nil {
		return fmt.Errorf("SLUICE_ENCRYPTION_KEY / SLUICE_ENCRYPTION_KEYS_OLD: %w", err)
	}
	pool, err := store.NewPool(ctx, cfg.DatabaseURL.Reveal(), cfg.DBMaxConns, "sluice-ingress")
	if err != nil {
		return err
	}
	defer pool.Close()
	st := store.New(pool, sealer)

	nc, err := jobs.Connect(cfg.NATS("sluice-ingress"), log)
	if err != nil {
		return err
	}
	defer nc.Close()
	// An async publish whose ack never comes (a lost reply, a leader change) is given up
	// after pubTimeout, so it cannot stay pending in the client for the process's life.
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncTimeout(pubTimeout))
	if err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	// The same stream settings as the worker's (cli.Common.Queue), or each would keep
	// updating the stream to its own.
	if _, err := jobs.EnsureStream(ctx, js, cfg.Queue()); err != nil {
		return err
	}
	ostream, err := jobs.EnsureOutcomeStream(ctx, js, cfg.Queue())
	if err != nil {
		return err
	}
	var cache *respCache
	if cfg.CacheMaxBytes > 0 {
		// An entry must fit one NATS message.
		cfg.CacheMaxEntryBytes = min(cfg.CacheMaxEntryBytes, int(nc.MaxPayload())-1024)
		if cache, err = ensureCache(ctx, js, &cfg); err != nil {
			return fmt.Errorf("response cache bucket: %w", err)
		}
	}
	mux, err := jobs.NewMux(nc)
	if err != nil {
		return err
	}
	defer func() { _ = mux.Close() }()
	nc.SetReconnectHandler(func(*nats.Conn) {
		log.Info("nats reconnected")
		mux.NoteReconnect()
	})
	done, err := jobs.NewDoneHub(nc)
	if err != nil {
		return err
	}
	defer func() { _ = done.Close() }()

	router := route.NewRouter(st, nil, log)
	if err := router.Refresh(ctx); err != nil {
		return fmt.Errorf("load channels: %w", err)
	}
	stopWatch, err := router.WatchChanges(nc)
	if err != nil {
		return err
	}
	defer stopWatch()

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	// Leave room for the job envelope under the NATS max payload.
	maxBody := min(cfg.MaxBodyBytes, nc.MaxPayload()-16<<10)
	if maxBody < cfg.MaxBodyBytes {
		log.WarnContext(ctx, "INGRESS_MAX_BODY_BYTES lowered to fit the NATS max payload", "max_body_bytes", maxBody)
	}
	pub := jobs.NewPublisher(nc, js, pubTimeout)
	pubAck := prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "sluice_ingress_publish_ack_seconds",
		Help:    "How long a job publish waited for JetStream's ack, retries during a leader election included, by result (ok, error).",
		Buckets: []float64{.0005, .001, .002, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}}, []string{"result"})
	reg.MustRegister(pubAck)
	pubOK, pubErr := pubAck.WithLabelValues("ok"), pubAck.WithLabelValues("error")
	pub.SetObserver(func(d time.Duration, err error) {
		if err != nil {
			pubErr.Observe(d.Seconds())
			return
		}
		pubOK.Observe(d.Seconds())
	})
	outcomes := jobs.NewOutcomes(nc, js, ostream, pubTimeout)
	s := &Server{cfg: cfg, store: st, nc: nc, pub: pub, outcomes: outcomes, mux: mux, router: router,
		log: log, waiting: make(chan struct{}, cfg.MaxWaiting), keys: &keyCache{ttl: cfg.KeyCacheTTL, m: map[string]cachedKey{}},
		maxBody: maxBody, done: done, queue: newQueuer(st, pub), clock: opts.Now, cache: cache,
		files: files.New(pool), batches: batches.New(pool), uploads: make(chan struct{}, max(1, cfg.DBMaxConns/4)),
		tracer: telemetry.NewTracer(tp)}
	s.metrics = newMetrics(reg, func() float64 { return float64(len(s.waiting)) })

	refused := prometheus.NewCounter(prometheus.CounterOpts{Name: "sluice_ingress_connections_refused_total",
		Help: "Client connections closed at accept because their address had INGRESS_MAX_CONNS_PER_IP open."})
	reads := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "sluice_ingress_job_reads",
		Help: "Job reads (GET /v1/jobs[/{id}]) in progress now."}, func() float64 { return float64(len(s.readSlots())) })
	bound := prometheus.NewGauge(prometheus.GaugeOpts{Name: "sluice_goroutines_bound",
		Help: "The most goroutines this process is built to run with its settings (README, How it holds its bounds); compare go_goroutines."})
	bound.Set(float64(goroutineBound(cfg)))
	reg.MustRegister(refused, reads, bound)
	listeners, err := s.openListeners(opts.Listener, promhttp.HandlerFor(reg, promhttp.HandlerOpts{}), refused.Inc)
	if err != nil {
		return err
	}

	var wg sync.WaitGroup
	bgCtx, stopBG := context.WithCancel(ctx)
	wg.Go(func() { router.Run(bgCtx, cfg.ChannelRefresh) })
	// The queuers serve submissions until the HTTP server has drained (serveAll drains it first).
	queueCtx, stopQueue := context.WithCancel(context.WithoutCancel(ctx))
	for range queuers {
		wg.Go(func() { s.queue.run(queueCtx) })
	}
	wg.Go(func() {
		if err := cli.ServePprof(bgCtx, cfg.PprofAddr, log); err != nil {
			log.Error("pprof", "err", err)
		}
	})
	defer func() { stopBG(); stopQueue(); wg.Wait() }()

	return s.serveAll(ctx, &wg, listeners, cfg.ShutdownGrace, opts.Ready)
}

// models serves GET /v1/models: the models this key may use.
func (s *Server) models(w http.ResponseWriter, r *http.Request) {
	key, err := s.authenticate(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	data := []map[string]any{}
	for _, m := range s.router.Models() {
		if key.AllowsModel(m) {
			data = append(data, map[string]any{"id": m, "object": "model", "created": 0, "owned_by": "sluice"})
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"object": "list", "data": data})
}
