package worker

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/otel/trace"

	batchrun "github.com/sluicehq/sluice/internal/batches"
	"github.com/sluicehq/sluice/internal/cli"
	"github.com/sluicehq/sluice/migrations"
	"github.com/sluicehq/sluice/pkg/batches"
	"github.com/sluicehq/sluice/pkg/files"
	"github.com/sluicehq/sluice/pkg/jobs"
	"github.com/sluicehq/sluice/pkg/providers"
	"github.com/sluicehq/sluice/pkg/route"
	"github.com/sluicehq/sluice/pkg/store"
	"github.com/sluicehq/sluice/pkg/telemetry"
	"github.com/sluicehq/sluice/pkg/webhook"
)

// Options are what tests may add to Run.
type Options struct {
	Listener net.Listener      // served instead of listening on cfg.Addr
	Ready    func(addr string) // called once jobs are being pulled
	Tune     func(*PoolConfig) // lets tests shorten internal timings
	// TracerProvider, if set, replaces the one the OTEL_* environment makes (telemetry.Setup).
	TracerProvider trace.TracerProvider
}

// Migrate applies the database migrations and returns.
func Migrate(ctx context.Context, databaseURL string) error {
	pool, err := store.NewPool(ctx, databaseURL, 2, "sluice-migrate")
	if err != nil {
		return err
	}
	defer pool.Close()
	return migrations.Apply(ctx, pool)
}

// Run works jobs until ctx is done, then drains in-flight jobs within ShutdownGrace and
// closes its dependencies in reverse order of opening.
func Run(ctx context.Context, cfg Config, log *slog.Logger, opts Options) error {
	tp, shutdownTracing, err := telemetry.Setup(ctx, "sluice-worker", log)
	if err != nil {
		return err
	}
	defer func() { // last: the spans of jobs drained at shutdown are flushed too
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
	pool, err := store.NewPool(ctx, cfg.DatabaseURL.Reveal(), cfg.DBMaxConns, "sluice-worker")
	if err != nil {
		return err
	}
	defer pool.Close()
	if err := migrations.Apply(ctx, pool); err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	st := store.New(pool, sealer)
	st.SetUnpricedPrice(cfg.UnpricedInput, cfg.UnpricedOutput)

	nc, err := jobs.Connect(cfg.NATS("sluice-worker"), log)
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	qcfg := cfg.Queue()
	if _, err := jobs.EnsureStream(ctx, js, qcfg); err != nil {
		return err
	}
	cons, err := jobs.EnsureConsumer(ctx, js, qcfg)
	if err != nil {
		return err
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	registry := providers.NewRegistry(
		providers.ClientConfig{MaxConnsPerHost: cfg.Concurrency, ResponseHeaderTimeout: cmp.Or(cfg.FirstByteTimeout, cfg.IdleTimeout),
			IdleConnTimeout: cfg.IdleConnTimeout, H2C: cfg.UpstreamH2C},
		providers.Limits{IdleTimeout: cfg.IdleTimeout, FirstByteTimeout: cfg.FirstByteTimeout, MaxResponseBytes: cfg.MaxResponseBytes,
			MaxRecapBytes: cfg.ResponsesRecapBytes},
		providers.WithNativeResponses(cfg.nativeResponsesHosts()...))
	defer registry.CloseIdle()
	router := route.NewRouter(st, registry.Build, log)
	if err := router.Refresh(ctx); err != nil {
		return fmt.Errorf("load channels: %w", err)
	}
	stopWatch, err := router.WatchChanges(nc)
	if err != nil {
		return err
	}
	defer stopWatch()

	pcfg := PoolConfig{Queue: qcfg, Concurrency: cfg.Concurrency, ShutdownGrace: cfg.ShutdownGrace,
		MaxAttempts: cfg.MaxAttempts, KeyCacheTTL: cfg.KeyCacheTTL, KeyShare: cfg.KeyShare, BatchShare: cfg.BatchShare,
		SettleLinger: cfg.SettleLinger}
	if opts.Tune != nil {
		opts.Tune(&pcfg)
	}
	metrics := NewMetrics(reg, MetricsOptions{PerKey: cfg.MetricsPerKey, KnownModelFunc: router.Has})
	reg.MustRegister(newCircuitCollector(router), goroutineBoundGauge(goroutineBound(cfg)))
	w := NewPool(pcfg, nc, cons, st, router, log, metrics)
	w.SetTracer(telemetry.NewTracer(tp))
	// The outcomes stream exists whatever SettleVia says, and this worker's settlers run
	// either way, so outcomes left by workers of the other setting are still settled.
	ostream, err := jobs.EnsureOutcomeStream(ctx, js, qcfg)
	if err != nil {
		return err
	}
	ocons, err := jobs.EnsureOutcomeConsumer(ctx, js, qcfg)
	if err != nil {
		return err
	}
	outcomes := jobs.NewOutcomes(nc, js, ostream, 10*time.Second)
	stopConfig, err := outcomes.WatchConfig() // answers by outcome only while the stream republishes them
	if err != nil {
		return err
	}
	defer stopConfig()
	out := outcomes
	if cfg.SettleVia == "postgres" {
		out = nil
	}
	w.SettleVia(out, ocons, max(cfg.Settlers, 1))
	if _, err := jobs.EnsureBatchStream(ctx, js, qcfg); err != nil {
		return err
	}
	bcons, err := jobs.EnsureBatchConsumer(ctx, js, qcfg)
	if err != nil {
		return err
	}
	bst := batches.New(pool)
	w.SetBatches(bcons, bst.Status)
	runner := batchrun.NewRunner(batchrun.Config{MaxLine: int(nc.MaxPayload()) - 16<<10}, bst, files.New(pool),
		st.KeyByID, router, jobs.NewPublisher(nc, js, 10*time.Second), log)
	disp := webhook.NewDispatcher(webhook.DispatcherConfig{Concurrency: cfg.WebhookConcurrency, PerKey: cfg.WebhookKeyConcurrency,
		RetryBase: cfg.WebhookRetryBase, AllowPrivate: cfg.WebhookAllowPrivate, AttemptFunc: metrics.webhookAttempt}, st, nc, log)

	ln := opts.Listener
	if ln == nil {
		if ln, err = net.Listen("tcp", cfg.Addr); err != nil {
			return fmt.Errorf("listen on %s: %w", cfg.Addr, err)
		}
	}
	// The operator's console asks every worker for its circuits (GET /admin/v1/channels/health).
	host, _ := os.Hostname()
	stopCircuits, err := router.ServeCircuits(nc, host+"@"+ln.Addr().String())
	if err != nil {
		_ = ln.Close()
		return err
	}
	defer stopCircuits()
	ops := http.NewServeMux()
	ops.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	ops.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		pctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		if !nc.IsConnected() || st.Ping(pctx) != nil {
			http.Error(w, "unavailable: NATS or Postgres unreachable\n", http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ok\n"))
	})
	ops.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	srv := &http.Server{Handler: ops, ReadHeaderTimeout: 5 * time.Second, ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}

	var wg sync.WaitGroup
	bgCtx, stopBG := context.WithCancel(context.WithoutCancel(ctx))
	defer func() { stopBG(); wg.Wait() }()
	wg.Go(func() { router.Run(bgCtx, cfg.ChannelRefresh) })
	// A job whose outcome waits in the outcomes stream (Postgres was away) is not overdue:
	// its settler will end it. Without the stream's answer, spare it too, until the next sweep.
	pending := func(ctx context.Context, id string) bool {
		o, err := outcomes.Pending(ctx, id)
		return err != nil || o != nil
	}
	wg.Go(func() { sweep(bgCtx, st, nc, log, cfg.Retention, qcfg.SweepAfter(), pending) })
	wg.Go(func() {
		if err := cli.ServePprof(bgCtx, cfg.PprofAddr, log); err != nil {
			log.Error("pprof", "err", err)
		}
	})
	wg.Go(func() { disp.Run(bgCtx) })
	wg.Go(func() { runner.Run(bgCtx) })
	gauges := newQueueGauges(reg)
	wg.Go(func() { watchQueue(bgCtx, gauges, cons, ocons, queueWatchEvery, log) })
	errc := make(chan error, 1)
	wg.Go(func() { errc <- srv.Serve(ln) })
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()

	log.InfoContext(ctx, "worker started", "concurrency", cfg.Concurrency, "ops_addr", ln.Addr().String())
	if opts.Ready != nil {
		opts.Ready(ln.Addr().String())
	}
	runErr := w.Run(ctx)
	log.InfoContext(ctx, "worker stopped")
	select {
	case err := <-errc:
		if !errors.Is(err, http.ErrServerClosed) {
			return errors.Join(runErr, fmt.Errorf("ops server: %w", err))
		}
	default:
	}
	return runErr
}

// Retention runs each minute in batches of retentionBatch rows for at most retentionBudget.
const (
	retentionBatch  = 5000
	retentionBudget = 20 * time.Second
)

// sweep ends overdue jobs and deletes old ones, once a minute. Ending overdue jobs is a
// safety net: a job whose message was lost still reaches a terminal state.
// A job is ended once it is overdue by more than after (QueueConfig.SweepAfter: past the
// time its worker may still be recording it); jobs finished longer than retention ago are
// deleted.
func sweep(ctx context.Context, st *store.Store, nc interface{ Publish(string, []byte) error }, log *slog.Logger,
	retention, after time.Duration, pending func(context.Context, string) bool,
) {
	timeout, _ := json.Marshal(jobs.Timeout())
	t := time.NewTicker(time.Minute)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		sctx, cancel := context.WithTimeout(ctx, 55*time.Second)
		ids, err := st.ExpireOverdue(sctx, after, timeout, pending)
		if err != nil {
			log.WarnContext(ctx, "expire overdue jobs", "err", err)
		}
		for _, id := range ids {
			_ = nc.Publish(jobs.DonePrefix+id, nil)
		}
		if len(ids) > 0 {
			log.WarnContext(ctx, "ended overdue jobs", "count", len(ids))
		}
		if err := st.DeleteOldRateWindows(sctx, time.Now()); err != nil {
			log.WarnContext(ctx, "delete old rate windows", "err", err)
		}
		// Retention keeps pace with settlement: batches until nothing is left or a time
		// budget, each minute (measured in TestRetentionKeepsPace_Issue9_10).
		cutoff := time.Now().Add(-retention)
		if n, err := store.Prune(sctx, retentionBudget, retentionBatch, func(ctx context.Context, batch int) (int64, error) {
			return st.DeleteFinishedBefore(ctx, cutoff, batch)
		}); err != nil {
			log.WarnContext(ctx, "delete old jobs", "err", err, "deleted", n)
		} else if n > 0 {
			log.InfoContext(ctx, "deleted old jobs", "count", n)
		}
		idemCutoff := time.Now().Add(-24 * time.Hour)
		if n, err := store.Prune(sctx, retentionBudget, retentionBatch, func(ctx context.Context, batch int) (int64, error) {
			return st.DeleteIdempotencyKeysBefore(ctx, idemCutoff, batch)
		}); err != nil {
			log.WarnContext(ctx, "delete old idempotency keys", "err", err, "deleted", n)
		} else if n > 0 {
			log.InfoContext(ctx, "deleted old idempotency keys", "count", n)
		}
		cancel()
	}
}
