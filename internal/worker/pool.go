package worker

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/sourcegraph/conc/pool"

	"github.com/sluicehq/sluice/internal/batch"
	"github.com/sluicehq/sluice/pkg/jobs"
	"github.com/sluicehq/sluice/pkg/route"
	"github.com/sluicehq/sluice/pkg/slots"
	"github.com/sluicehq/sluice/pkg/store"
	"github.com/sluicehq/sluice/pkg/telemetry"
)

// Recorder is what the pool needs from Postgres.
type Recorder interface {
	StartJobs(ctx context.Context, js []store.NewJob) ([]store.Started, error)
	FinishJobs(ctx context.Context, os []store.Outcome) ([]store.Finished, error)
	Job(ctx context.Context, keyID, id string) (store.Job, error)
	DisableChannel(ctx context.Context, id, reason string) error
	KeyByID(ctx context.Context, id string) (store.Key, error)
}

// PoolConfig tunes a Pool. Zero fields take the defaults noted. The queue's settings
// (JobTimeout, AckWait, MaxDeliver, the record grace) come from Queue, the same
// jobs.QueueConfig the stream and consumer were made with, so they cannot disagree.
type PoolConfig struct {
	Queue         jobs.QueueConfig
	Concurrency   int           // jobs in flight in this process (64)
	ShutdownGrace time.Duration // in-flight jobs get this long to finish at shutdown (30s)
	MaxAttempts   int           // upstream attempts per job, across channels (3)
	RetryBase     time.Duration // first retry backoff, doubled each time, with jitter (250ms)
	RetryMax      time.Duration // cap on one backoff (5s)
	FetchWait     time.Duration // longest wait of one pull request (5s)
	KeyCacheTTL   time.Duration // how long a key read at pick-up is trusted (10s)
	// Now, if set, is the clock budget periods are judged by at pick-up (tests move it).
	Now func() time.Time
	// KeyShare is the fraction of Concurrency one API key's jobs may hold at once (0.5; 1
	// turns the cap off).
	KeyShare float64
	// BatchShare sizes the slots batch lines run in, as a fraction of Concurrency (0.25).
	// They are slots of their own, beside Concurrency: interactive jobs never wait for a
	// slot a batch line holds, and a batch drains however busy the interactive slots are.
	BatchShare float64
	// SettleLinger is how long a settler holding one outcome waits for more before it
	// writes them (0: 1 ms, about only those already waiting).
	SettleLinger time.Duration
}

func (c PoolConfig) withDefaults() PoolConfig {
	c.Queue = c.Queue.WithDefaults()
	c.Concurrency = cmp.Or(c.Concurrency, 64)
	c.ShutdownGrace = cmp.Or(c.ShutdownGrace, 30*time.Second)
	c.MaxAttempts = cmp.Or(c.MaxAttempts, 3)
	c.RetryBase = cmp.Or(c.RetryBase, 250*time.Millisecond)
	c.RetryMax = cmp.Or(c.RetryMax, 5*time.Second)
	c.FetchWait = cmp.Or(c.FetchWait, 5*time.Second)
	c.KeyCacheTTL = cmp.Or(c.KeyCacheTTL, 10*time.Second)
	c.KeyShare = cmp.Or(c.KeyShare, 0.5)
	c.BatchShare = cmp.Or(c.BatchShare, 0.25)
	return c
}

// Pool runs jobs from the shared consumer on a bounded pool of goroutines. Its concerns
// live in separate files: this one fetches for free slots and shuts down; held.go keeps
// heartbeats and cancels; handle.go runs one delivery; deliver.go decides Ack, Nak or Term;
// attempt.go calls upstream with retries and failover; record.go settles and replies.
type Pool struct {
	cfg     PoolConfig
	nc      *nats.Conn
	cons    jetstream.Consumer
	rec     Recorder
	log     *slog.Logger
	metrics *Metrics
	held    *held
	acks    *acks // finished jobs' acks, coalesced (acks.go)
	keys    *keyCheck
	shares  *shares
	caller  *caller
	policy  deliveryPolicy
	tracer  *telemetry.Tracer // nil: tracing off (SetTracer)

	settle *batch.Batcher[store.Outcome, store.Finished] // job outcomes, written in batches
	start  *batch.Batcher[store.NewJob, store.Started]   // job starts (async jobs, redeliveries), in batches

	// outcomes, if set, is where outcomes become durable (SettleVia); settlers write them
	// to Postgres from settleCons.
	outcomes   *jobs.Outcomes
	settleCons jetstream.Consumer
	settlers   int

	// batchCons, if set, is the batch-line consumer, pulled into at most BatchShare of the
	// slots; batchState says whether a line's batch still runs (batchlines.go).
	batchCons  jetstream.Consumer
	batchState *batchState
}

// settleBudget bounds the bytes of the outcomes one settler holds (one outcome larger than
// it goes alone), settleMax their number.
const (
	settleBudget = 64 << 20
	settleMax    = 256
)

// SettleVia makes the pool record outcomes on the outcomes stream before it replies, and
// run n settler loops that write them to Postgres from cons (n may be 0: other workers'
// settlers then write them). Call it before Run.
func (p *Pool) SettleVia(out *jobs.Outcomes, cons jetstream.Consumer, n int) {
	p.outcomes, p.settleCons, p.settlers = out, cons, n
}

// hardStopAfter is how long past the shutdown grace a job may still try to record its outcome.
const hardStopAfter = 10 * time.Second

// settlers is how many batches of outcomes (and, separately, of starts) may be written at
// once; outcomes that arrive while a batch commits wait for the next. With the key's spend
// in shards (migration 0006) one writer with larger batches costs Postgres less per job:
// sync c=64 alternating in one sitting, 1 settler 4,431 and 4,058 req/s, 2 settlers 3,595
// and 3,093; c=1 latency unchanged within noise (docs/perf-log.md).
const settlers = 1

// NewPool returns a Pool. metrics may be nil.
func NewPool(cfg PoolConfig, nc *nats.Conn, cons jetstream.Consumer, rec Recorder, router *route.Router,
	log *slog.Logger, metrics *Metrics,
) *Pool {
	if metrics == nil {
		metrics = NewMetrics(nil, MetricsOptions{})
	}
	cfg = cfg.withDefaults()
	log = log.With("component", "worker")
	return &Pool{cfg: cfg, nc: nc, cons: cons, rec: rec, log: log, metrics: metrics, acks: newAcks(log),
		held:   newHeld(cfg.Queue.JobTimeout),
		keys:   newKeyCheck(cfg.KeyCacheTTL, rec.KeyByID),
		shares: newShares(int(math.Ceil(cfg.KeyShare * float64(cfg.Concurrency)))),
		caller: &caller{cfg: cfg, router: router, rec: rec, limits: limiterOf(rec), nc: nc, metrics: metrics},
		policy: deliveryPolicy{maxDeliver: cfg.Queue.MaxDeliver},
		settle: batch.New(rec.FinishJobs, batch.Options{}),
		start:  batch.New(rec.StartJobs, batch.Options{})}
}

// Run works jobs until ctx is done, then stops fetching, gives in-flight jobs ShutdownGrace
// to finish, cancels the rest (they go back to the queue) and returns once every goroutine it
// started has exited. It never holds more messages than it has free slots: each Fetch asks
// for exactly the number of idle slots.
func (p *Pool) Run(ctx context.Context) error {
	p.metrics.slots.Set(float64(p.cfg.Concurrency))
	// Jobs outlive ctx by the grace period, so they get their own context; recording their
	// outcomes may take a few seconds more (hardCtx).
	workCtx, cancelWork := context.WithCancelCause(context.WithoutCancel(ctx))
	defer cancelWork(nil)
	hardCtx, cancelHard := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelHard()

	sub, err := p.nc.Subscribe(jobs.CancelSubjects, p.held.onCancel)
	if err != nil {
		return fmt.Errorf("subscribe to cancels: %w", err)
	}
	defer func() { _ = sub.Unsubscribe() }()

	// Background helpers outlive the pool: they stop only after every job has settled.
	var bg sync.WaitGroup
	bgCtx, stopBG := context.WithCancel(context.Background())
	bg.Go(func() { p.held.heartbeat(bgCtx, p.cfg.Queue.AckWait/3) })
	for range settlers {
		bg.Go(func() { p.settle.Run(bgCtx) })
		bg.Go(func() { p.start.Run(bgCtx) })
	}
	for range p.settlers {
		st := &settler{cons: p.settleCons, finish: p.rec.FinishJobs, nc: p.nc, keys: p.keys, usage: p.metrics.usage, log: p.log,
			max: settleMax, budget: settleBudget, wait: p.cfg.FetchWait, linger: p.cfg.SettleLinger,
			ackWait: p.cfg.Queue.AckWait}
		bg.Go(func() { st.run(bgCtx) })
	}
	defer func() { stopBG(); bg.Wait() }()

	batchSlots := p.batchSlots() // batch lines' own slots, beside the Concurrency of interactive jobs
	wp := pool.New().WithMaxGoroutines(p.cfg.Concurrency + batchSlots)
	// conc starts pool goroutines lazily and keeps them until Wait: start all k now, so the
	// process's goroutine count is the same at idle as after load. Each warm-up task holds
	// its goroutine until all k exist, so Go must start a new goroutine for every one.
	var warm sync.WaitGroup
	release := make(chan struct{})
	warm.Add(p.cfg.Concurrency + batchSlots)
	for range p.cfg.Concurrency + batchSlots {
		wp.Go(func() { warm.Done(); <-release })
	}
	warm.Wait()
	close(release)
	free := slots.New(p.cfg.Concurrency)
	var fetchers sync.WaitGroup
	if p.batchCons != nil {
		fetchers.Go(func() { p.runBatchLines(ctx, workCtx, hardCtx, wp, slots.New(batchSlots)) })
	}
	for free.Take(ctx) {
		k := 1 + free.TakeIdle()
		n := p.fetchFrom(ctx, p.cons, k, func(msg jetstream.Msg) {
			wp.Go(func() {
				defer free.Put(1)
				p.handle(workCtx, hardCtx, msg)
			})
		})
		free.Put(k - n) // slots the server had no message for
	}
	fetchers.Wait()
	p.log.InfoContext(ctx, "stopping: waiting for in-flight jobs", "in_flight", p.cfg.Concurrency-free.Idle(),
		"grace", p.cfg.ShutdownGrace)
	grace := time.AfterFunc(p.cfg.ShutdownGrace, func() { cancelWork(ErrShutdown) })
	defer grace.Stop()
	hard := time.AfterFunc(p.cfg.ShutdownGrace+hardStopAfter, cancelHard)
	defer hard.Stop()
	wp.Wait()
	p.acks.close()
	return nil
}

// fetchFrom pulls up to k messages from cons and hands each to start; it returns how many
// arrived.
func (p *Pool) fetchFrom(ctx context.Context, cons jetstream.Consumer, k int, start func(jetstream.Msg)) int {
	fctx, cancel := context.WithTimeout(ctx, p.cfg.FetchWait)
	defer cancel() // only after the batch is drained: cancelling ends the batch early
	b, err := cons.Fetch(k, jetstream.FetchContext(fctx))
	if err != nil {
		if ctx.Err() == nil {
			p.log.WarnContext(ctx, "fetch jobs", "err", err)
			slots.Sleep(ctx, time.Second) // NATS away: don't spin
		}
		return 0
	}
	n := 0
	for msg := range b.Messages() {
		n++
		start(msg)
	}
	if err := b.Error(); err != nil && ctx.Err() == nil && !errors.Is(err, context.DeadlineExceeded) &&
		!errors.Is(err, jetstream.ErrNoMessages) {
		p.log.WarnContext(ctx, "fetch batch", "err", err)
		if n == 0 {
			slots.Sleep(ctx, time.Second)
		}
	}
	return n
}

// limiterOf is rec's channelLimiter, if it is one.
func limiterOf(rec Recorder) channelLimiter {
	l, _ := rec.(channelLimiter)
	return l
}
