package jobs

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"runtime/debug"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/sourcegraph/conc/pool"

	"github.com/sluicehq/sluice/pkg/providers"
	"github.com/sluicehq/sluice/pkg/store"
)

// Causes of a job's context ending early.
var (
	// ErrShutdown: the worker is stopping; the job goes back to the queue.
	ErrShutdown = errors.New("worker shutting down")
	// ErrCanceled: the job was cancelled through the API; it ends canceled, uncharged.
	ErrCanceled = errors.New("job canceled")
	// ErrClientGone: a sync caller went away; the job ends canceled and is charged what the
	// upstream already did.
	ErrClientGone = errors.New("client went away")
	// ErrJobTimeout: the job's deadline passed.
	ErrJobTimeout = errors.New("job deadline exceeded")
)

// Cancel reasons carried in a cancel message.
const (
	CancelUser       = "user"
	CancelClientGone = "client_gone"
)

// Recorder is what the worker needs from Postgres.
type Recorder interface {
	StartJobs(ctx context.Context, js []store.NewJob) ([]store.Started, error)
	FinishJobs(ctx context.Context, os []store.Outcome) ([]store.Finished, error)
	Job(ctx context.Context, keyID, id string) (store.Job, error)
	DisableChannel(ctx context.Context, id, reason string) error
}

// WorkerConfig tunes a Worker. Zero fields take the defaults noted.
type WorkerConfig struct {
	Concurrency   int           // jobs in flight in this process (64)
	JobTimeout    time.Duration // cap on any job (15m)
	ShutdownGrace time.Duration // in-flight jobs get this long to finish at shutdown (30s)
	AckWait       time.Duration // the consumer's AckWait; heartbeats go every third of it (60s)
	MaxDeliver    int           // the consumer's MaxDeliver (10)
	MaxAttempts   int           // upstream attempts per job, across channels (3)
	RetryBase     time.Duration // first retry backoff, doubled each time, with jitter (250ms)
	RetryMax      time.Duration // cap on one backoff (5s)
	// RecordGrace is how long past a job's deadline the worker keeps trying to record its
	// outcome while Postgres is unavailable, before handing the job back to the queue (5m).
	RecordGrace time.Duration
	FetchWait   time.Duration // longest wait of one pull request (5s)
}

func (c WorkerConfig) withDefaults() WorkerConfig {
	c.Concurrency = cmp.Or(c.Concurrency, 64)
	c.JobTimeout = cmp.Or(c.JobTimeout, 15*time.Minute)
	c.ShutdownGrace = cmp.Or(c.ShutdownGrace, 30*time.Second)
	c.AckWait = cmp.Or(c.AckWait, 60*time.Second)
	c.MaxDeliver = cmp.Or(c.MaxDeliver, 10)
	c.MaxAttempts = cmp.Or(c.MaxAttempts, 3)
	c.RetryBase = cmp.Or(c.RetryBase, 250*time.Millisecond)
	c.RetryMax = cmp.Or(c.RetryMax, 5*time.Second)
	c.RecordGrace = cmp.Or(c.RecordGrace, 5*time.Minute)
	c.FetchWait = cmp.Or(c.FetchWait, 5*time.Second)
	return c
}

// Worker runs jobs from the shared consumer on a bounded pool.
type Worker struct {
	cfg     WorkerConfig
	nc      *nats.Conn
	cons    jetstream.Consumer
	rec     Recorder
	router  *Router
	log     *slog.Logger
	metrics *Metrics

	settle *batcher[store.Outcome, store.Finished] // job outcomes, written in batches
	start  *batcher[store.NewJob, store.Started]   // job starts (async jobs, redeliveries), in batches

	mu      sync.Mutex
	running map[string]context.CancelCauseFunc // job id → cancel
	beating map[uint64]jetstream.Msg           // stream sequence → message held
	// cancelled remembers cancels for jobs this worker did not hold (job id → forget after),
	// so a sync job whose caller left while it was queued is not run later. Bounded.
	cancelled map[string]cancelNote
}

// cancelNote is a remembered cancel: why, and until when to remember it.
type cancelNote struct {
	cause error
	until time.Time
}

// hardStopAfter is how long past the shutdown grace a job may still try to record its outcome.
const hardStopAfter = 10 * time.Second

// settlers is how many batches of outcomes (and, separately, of starts) may be written at
// once; outcomes that arrive while a batch commits wait for the next. With the key's spend
// on one row, 2 were best (make bench c=64: 1 settler 1,396 req/s, 2 settlers 1,649, 4
// settlers 1,343), the second hiding the first's wait for the row lock. With spend in
// shards (migration 0006) one writer with larger batches costs Postgres less per job:
// sync c=64 alternating in one sitting, 1 settler 4,431 and 4,058 req/s, 2 settlers 3,595
// and 3,093; c=1 latency unchanged within noise.
const settlers = 1

// maxCancelled bounds the remembered cancels.
const maxCancelled = 100_000

// NewWorker returns a Worker. metrics may be nil.
func NewWorker(cfg WorkerConfig, nc *nats.Conn, cons jetstream.Consumer, rec Recorder, router *Router,
	log *slog.Logger, metrics *Metrics,
) *Worker {
	if metrics == nil {
		metrics = NewMetrics(nil)
	}
	return &Worker{cfg: cfg.withDefaults(), nc: nc, cons: cons, rec: rec, router: router,
		log: log.With("component", "worker"), metrics: metrics,
		running: map[string]context.CancelCauseFunc{}, beating: map[uint64]jetstream.Msg{},
		cancelled: map[string]cancelNote{}, settle: newBatcher(rec.FinishJobs), start: newBatcher(rec.StartJobs)}
}

// Run works jobs until ctx is done, then stops fetching, gives in-flight jobs ShutdownGrace
// to finish, cancels the rest (they go back to the queue) and returns once every goroutine it
// started has exited. It never holds more messages than it has free slots: each Fetch asks
// for exactly the number of idle slots.
func (w *Worker) Run(ctx context.Context) error {
	w.metrics.slots.Set(float64(w.cfg.Concurrency))
	// Jobs outlive ctx by the grace period, so they get their own context; recording their
	// outcomes may take a few seconds more (hardCtx).
	workCtx, cancelWork := context.WithCancelCause(context.WithoutCancel(ctx))
	defer cancelWork(nil)
	hardCtx, cancelHard := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelHard()

	sub, err := w.nc.Subscribe(cancelPrefix+"*", w.onCancel)
	if err != nil {
		return fmt.Errorf("subscribe to cancels: %w", err)
	}
	defer func() { _ = sub.Unsubscribe() }()

	// Background helpers outlive the pool: they stop only after every job has settled.
	var bg sync.WaitGroup
	bgCtx, stopBG := context.WithCancel(context.Background())
	bg.Go(func() { w.heartbeat(bgCtx) })
	for range settlers {
		bg.Go(func() { w.settle.run(bgCtx) })
		bg.Go(func() { w.start.run(bgCtx) })
	}
	defer func() { stopBG(); bg.Wait() }()

	p := pool.New().WithMaxGoroutines(w.cfg.Concurrency)
	// conc starts pool goroutines lazily and keeps them until Wait: start all k now, so the
	// process's goroutine count is the same at idle as after load. Each warm-up task holds
	// its goroutine until all k exist, so Go must start a new goroutine for every one.
	var warm sync.WaitGroup
	release := make(chan struct{})
	warm.Add(w.cfg.Concurrency)
	for range w.cfg.Concurrency {
		p.Go(func() { warm.Done(); <-release })
	}
	warm.Wait()
	close(release)
	free := make(chan struct{}, w.cfg.Concurrency) // one token per idle slot
	for range w.cfg.Concurrency {
		free <- struct{}{}
	}
	for takeSlot(ctx, free) {
		k := 1 + drain(free)
		n := w.fetch(ctx, k, func(msg jetstream.Msg) {
			p.Go(func() {
				defer func() { free <- struct{}{} }()
				w.handle(workCtx, hardCtx, msg)
			})
		})
		for range k - n { // slots the server had no message for
			free <- struct{}{}
		}
	}
	w.log.InfoContext(ctx, "stopping: waiting for in-flight jobs", "in_flight", w.cfg.Concurrency-len(free),
		"grace", w.cfg.ShutdownGrace)
	grace := time.AfterFunc(w.cfg.ShutdownGrace, func() { cancelWork(ErrShutdown) })
	defer grace.Stop()
	hard := time.AfterFunc(w.cfg.ShutdownGrace+hardStopAfter, cancelHard)
	defer hard.Stop()
	p.Wait()
	return nil
}

// fetch pulls up to k messages and hands each to start; it returns how many arrived.
func (w *Worker) fetch(ctx context.Context, k int, start func(jetstream.Msg)) int {
	fctx, cancel := context.WithTimeout(ctx, w.cfg.FetchWait)
	defer cancel() // only after the batch is drained: cancelling ends the batch early
	batch, err := w.cons.Fetch(k, jetstream.FetchContext(fctx))
	if err != nil {
		if ctx.Err() == nil {
			w.log.WarnContext(ctx, "fetch jobs", "err", err)
			pause(ctx, time.Second) // NATS away: don't spin
		}
		return 0
	}
	n := 0
	for msg := range batch.Messages() {
		n++
		start(msg)
	}
	if err := batch.Error(); err != nil && ctx.Err() == nil && !errors.Is(err, context.DeadlineExceeded) &&
		!errors.Is(err, jetstream.ErrNoMessages) {
		w.log.WarnContext(ctx, "fetch batch", "err", err)
		if n == 0 {
			pause(ctx, time.Second)
		}
	}
	return n
}

func takeSlot(ctx context.Context, free chan struct{}) bool {
	select {
	case <-free:
		return true
	case <-ctx.Done():
		return false
	}
}

func drain(free chan struct{}) int {
	n := 0
	for {
		select {
		case <-free:
			n++
		default:
			return n
		}
	}
}

func pause(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

// heartbeat sends InProgress for every held message every AckWait/3, from one goroutine.
func (w *Worker) heartbeat(ctx context.Context) {
	t := time.NewTicker(w.cfg.AckWait / 3)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			w.mu.Lock()
			for _, m := range w.beating {
				_ = m.InProgress() // fire and forget; a lost one only risks a redelivery
			}
			for id, c := range w.cancelled {
				if now.After(c.until) {
					delete(w.cancelled, id)
				}
			}
			w.mu.Unlock()
		}
	}
}

// onCancel runs on the cancel subscription's goroutine.
func (w *Worker) onCancel(m *nats.Msg) {
	id := m.Subject[len(cancelPrefix):]
	cause := ErrCanceled
	if string(m.Data) == CancelClientGone {
		cause = ErrClientGone
	}
	w.mu.Lock()
	cancel := w.running[id]
	if cancel == nil && len(w.cancelled) < maxCancelled {
		w.cancelled[id] = cancelNote{cause: cause, until: time.Now().Add(w.cfg.JobTimeout)}
	}
	w.mu.Unlock()
	if cancel != nil {
		cancel(cause)
	}
}

// outcome is how one job run ended.
type outcome struct {
	status    string
	code      int
	body      json.RawMessage
	err       *APIError
	usage     *store.Usage
	charge    bool
	channelID string
}

// handle runs one delivery of a job: start it in Postgres, call upstream, record the result,
// reply, ack. Every path ends in exactly one of Ack, Nak or Term.
// ctx is the job's context (cancelled at the end of the shutdown grace); hard is what
// recording runs under: it survives ctx, so an outcome is still recorded after a shutdown
// cancel, but ends a few seconds later, so a worker whose Postgres is away still stops (its
// unrecorded jobs go back to the queue).
func (w *Worker) handle(ctx, hard context.Context, msg jetstream.Msg) {
	md, err := msg.Metadata()
	if err != nil {
		_ = msg.Term()
		return
	}
	job, err := Decode(msg.Data())
	if err != nil {
		w.log.ErrorContext(ctx, "dropping malformed job", "err", err, "stream_seq", md.Sequence.Stream)
		_ = msg.TermWithReason("malformed job")
		return
	}
	log := w.log.With("job_id", job.ID, "key_id", job.KeyID, "model", job.Model, "attempt", md.NumDelivered)
	w.mu.Lock()
	w.beating[md.Sequence.Stream] = msg
	w.mu.Unlock()
	w.metrics.busy.Inc()
	defer func() {
		w.mu.Lock()
		if w.beating[md.Sequence.Stream] == msg { // not a later delivery of the same message
			delete(w.beating, md.Sequence.Stream)
		}
		w.mu.Unlock()
		w.metrics.busy.Dec()
	}()
	rep := newReplier(w.nc, job, md.NumDelivered)
	deadline := job.Deadline
	if cap := job.CreatedAt.Add(w.cfg.JobTimeout); cap.Before(deadline) {
		deadline = cap
	}
	// Recording may outlive the job's context (shutdown, deadline) by RecordGrace — counted
	// from now if the job arrives late — but not the worker's hard stop.
	recordCtx, cancelRecord := context.WithDeadline(hard, later(deadline, time.Now()).Add(w.cfg.RecordGrace))
	defer cancelRecord()

	// Recover panics here, at the job boundary: record an internal failure instead of losing
	// the job or taking the process down.
	defer func() {
		if r := recover(); r != nil {
			log.ErrorContext(ctx, "job panicked", "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
			w.finish(recordCtx, log, msg, job, rep, outcome{status: store.StatusFailed, code: 500,
				err: &APIError{Status: 500, Type: "internal_error", Message: "internal error while running the job"}})
		}
	}()

	w.mu.Lock()
	_, cancelled := w.cancelled[job.ID]
	w.mu.Unlock()
	var row store.Job
	// A sync job on its first delivery has no row yet and no earlier result: its row is
	// written once, with its outcome, which keeps one Postgres write on the hot path. Async
	// jobs (their row exists and must read "running") and redeliveries check in first.
	if job.Async || md.NumDelivered > 1 || cancelled {
		var started bool
		err = retryStore(recordCtx, log, "start job", func(ctx context.Context) error {
			st, err := w.start.do(ctx, store.NewJob{ID: job.ID, KeyID: job.KeyID, Endpoint: job.Endpoint,
				Model: job.Model, Async: job.Async, Request: storedRequest(job), CreatedAt: job.CreatedAt, Deadline: job.Deadline,
				Attempt: int(md.NumDelivered), HoldsSlot: job.HoldsSlot})
			row, started = st.Job, st.Started
			return err
		})
		if err != nil {
			w.giveBack(log, msg, md, err)
			return
		}
		if !started { // already ended: a redelivery after recording, or cancelled while queued
			log.InfoContext(ctx, "job already finished; replaying its answer", "status", row.Status)
			w.replay(ctx, log, msg, rep, &row, job.Async)
			return
		}
	}
	if row.CancelRequested || cancelled { // cancelled while no worker held it
		w.finish(recordCtx, log, msg, job, rep, outcome{status: store.StatusCanceled, code: 499,
			err: &APIError{Status: 499, Type: "canceled", Code: "job_canceled", Message: "the job was canceled"}})
		return
	}
	if !time.Now().Before(deadline) {
		w.finish(recordCtx, log, msg, job, rep, timeoutOutcome(nil, ""))
		return
	}

	jctx, cancelJob := context.WithCancelCause(ctx)
	jctx, cancelDeadline := context.WithDeadlineCause(jctx, deadline, ErrJobTimeout)
	w.mu.Lock()
	w.running[job.ID] = cancelJob
	late, cancelledMeanwhile := w.cancelled[job.ID] // a cancel that came after the check above
	w.mu.Unlock()
	if cancelledMeanwhile {
		cancelJob(late.cause)
	}
	out, cause := func() (outcome, error) {
		defer func() { // also on a panic, which the recover above turns into a failure
			cancelDeadline()
			cancelJob(nil)
			w.mu.Lock()
			delete(w.running, job.ID)
			w.mu.Unlock()
		}()
		out := w.run(jctx, log, job, rep)
		return out, context.Cause(jctx)
	}()

	if errors.Is(cause, ErrShutdown) && rep.seq == 0 && int(md.NumDelivered) < w.cfg.MaxDeliver {
		// Nothing reached the caller yet: another worker can run the whole job.
		log.InfoContext(ctx, "returning job to the queue at shutdown")
		_ = msg.Nak()
		return
	}
	w.finish(recordCtx, log, msg, job, rep, out)
}

// storedRequest is the request body a job's row keeps: an async job's, which is part of
// the job its owner created (its row already has it), and not a sync call's. A sync
// call's prompt is not needed to answer or replay it, so it is not kept (nor are streamed
// answers); its answer is, for a replay after a lost reply.
func storedRequest(job *Job) json.RawMessage {
	if job.Async {
		return job.Body
	}
	return nil
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// attempt is the delivery number of msg.
func attempt(msg jetstream.Msg) int {
	md, err := msg.Metadata()
	if err != nil {
		return 1
	}
	return int(md.NumDelivered)
}

// giveBack returns a job to the queue after Postgres stayed unreachable, or ends it on its
// last delivery.
func (w *Worker) giveBack(log *slog.Logger, msg jetstream.Msg, md *jetstream.MsgMetadata, err error) {
	if errors.Is(err, store.ErrPermanent) || int(md.NumDelivered) >= w.cfg.MaxDeliver {
		log.Error("cannot record job; dropping it", "err", err)
		_ = msg.TermWithReason("cannot record job")
		return
	}
	log.Warn("cannot record job; returning it to the queue", "err", err)
	_ = msg.NakWithDelay(time.Second)
}

// finish records the outcome, replies and acks.
func (w *Worker) finish(ctx context.Context, log *slog.Logger, msg jetstream.Msg, job *Job, rep *replier, out outcome) {
	var cost float64
	var applied bool
	var errJSON json.RawMessage
	if out.err != nil {
		errJSON, _ = json.Marshal(out.err)
	}
	o := store.Outcome{JobID: job.ID, Status: out.status, StatusCode: out.code, ChannelID: out.channelID,
		Response: out.body, Error: errJSON, Usage: out.usage, Charge: out.charge,
		Job: &store.NewJob{ID: job.ID, KeyID: job.KeyID, Endpoint: job.Endpoint, Model: job.Model, Request: storedRequest(job),
			CreatedAt: job.CreatedAt, Deadline: job.Deadline, Attempt: attempt(msg), HoldsSlot: job.HoldsSlot}}
	record := func() error {
		return retryStore(ctx, log, "finish job", func(ctx context.Context) error {
			f, err := w.settle.do(ctx, o)
			cost, applied = f.CostUSD, f.Applied
			return err
		})
	}
	err := record()
	if errors.Is(err, store.ErrPermanent) {
		// Postgres refused the content (say, an upstream answer that is not valid UTF-8).
		// Record the job without it — failed, but with the usage the upstream did report —
		// rather than leave it unrecorded.
		log.ErrorContext(ctx, "cannot store the job's content; recording it without", "err", err)
		out = outcome{status: store.StatusFailed, code: http.StatusBadGateway, usage: out.usage, charge: out.charge,
			channelID: out.channelID, err: &APIError{Status: http.StatusBadGateway, Type: "upstream_error",
				Code: "unstorable_answer", Message: "the upstream's answer could not be stored (it is not valid UTF-8 text)"}}
		errJSON, _ = json.Marshal(out.err)
		o.Status, o.StatusCode, o.Response, o.Error, o.Job.Request = out.status, out.code, nil, errJSON, nil
		err = record()
	}
	if err != nil {
		// Tell the caller now rather than let it wait for its deadline.
		_ = rep.final(&Final{JobID: job.ID, Status: store.StatusFailed, StatusCode: http.StatusServiceUnavailable,
			Error: &APIError{Status: http.StatusServiceUnavailable, Type: "overloaded_error", Code: "unrecorded",
				RetryAfter: 1, Message: "the job's result could not be recorded; retry the request"}})
		md, _ := msg.Metadata()
		w.giveBack(log, msg, md, err)
		return
	}
	if !applied { // someone else ended it first (a cancel, the overdue sweeper, another delivery)
		row, err := w.rec.Job(ctx, job.KeyID, job.ID)
		if err == nil {
			w.replay(ctx, log, msg, rep, &row, job.Async)
			return
		}
	}
	w.metrics.jobs.WithLabelValues(out.status).Inc()
	log.InfoContext(ctx, "job finished", "status", out.status, "status_code", out.code, "cost_usd", cost)
	f := &Final{JobID: job.ID, Status: out.status, StatusCode: out.code, Error: out.err, CostUSD: cost}
	if out.usage != nil {
		f.Usage = &Usage{PromptTokens: out.usage.PromptTokens, CompletionTokens: out.usage.CompletionTokens,
			TotalTokens: out.usage.PromptTokens + out.usage.CompletionTokens}
	}
	w.reply(ctx, log, msg, rep, f, out.body, job.Stream, job.Async)
}

// replay answers a job that has already ended from its stored row.
func (w *Worker) replay(ctx context.Context, log *slog.Logger, msg jetstream.Msg, rep *replier, row *store.Job, async bool) {
	f := FinalFromJob(row)
	var body json.RawMessage
	if row.Status == store.StatusSucceeded {
		body = row.Response
	}
	w.reply(ctx, log, msg, rep, f, body, len(body) == 0, async)
}

// FinalFromJob builds the final reply message of a finished job row.
func FinalFromJob(row *store.Job) *Final {
	f := &Final{JobID: row.ID, Status: row.Status, StatusCode: http.StatusOK}
	if row.StatusCode != nil {
		f.StatusCode = *row.StatusCode
	}
	if len(row.Error) > 0 {
		var e APIError
		if json.Unmarshal(row.Error, &e) == nil {
			e.Status = f.StatusCode
			f.Error = &e
		}
	}
	if row.PromptTokens != nil && row.CompletionTokens != nil {
		f.Usage = &Usage{PromptTokens: *row.PromptTokens, CompletionTokens: *row.CompletionTokens,
			TotalTokens: *row.PromptTokens + *row.CompletionTokens}
	}
	if row.CostUSD != nil {
		f.CostUSD = *row.CostUSD
	}
	return f
}

// reply sends the body (for non-stream answers) and the final message, announces the end
// of an async job (long polls and webhooks wait for it), and acks. The result is already in
// Postgres, so a lost reply or ack loses nothing: a redelivery replays the stored result.
func (w *Worker) reply(ctx context.Context, log *slog.Logger, msg jetstream.Msg, rep *replier, f *Final,
	body json.RawMessage, stream, async bool,
) {
	if stream {
		body = nil
	}
	if err := rep.finish(f, body); err != nil {
		log.WarnContext(ctx, "reply", "err", err)
	}
	if async {
		if b, err := json.Marshal(f); err == nil {
			_ = w.nc.Publish(DonePrefix+f.JobID, b)
		}
	}
	// A plain ack, not DoubleAck: a lost ack costs one redelivery, which StartJob turns into
	// a replay, and DoubleAck would not make delivery exactly-once anyway.
	if err := msg.Ack(); err != nil {
		log.WarnContext(ctx, "ack job", "err", err)
	}
}

// retryStore runs fn until it succeeds, fails permanently, or ctx ends, backing off between
// tries, so a Postgres restart delays jobs instead of losing them.
func retryStore(ctx context.Context, log *slog.Logger, what string, fn func(context.Context) error) error {
	delay := 100 * time.Millisecond
	for {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := fn(cctx)
		cancel()
		if err == nil || errors.Is(err, store.ErrPermanent) || errors.Is(err, store.ErrNotFound) {
			return err
		}
		log.WarnContext(ctx, what+": postgres unavailable; retrying", "err", err, "retry_in", delay)
		pause(ctx, delay)
		if ctx.Err() != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		delay = min(delay*2, 5*time.Second)
	}
}

// run calls upstream with retries and failover until success, a terminal error, or the end
// of ctx, and says how the job ended.
func (w *Worker) run(ctx context.Context, log *slog.Logger, job *Job, rep *replier) outcome {
	tried := map[string]bool{}
	var last *providers.Error
	lastChannel := ""
	emitted := 0
	emit := func(ev providers.Event) error {
		emitted++
		return rep.event(ev)
	}
	for attempt := 1; ; attempt++ {
		rt, wait, ok := w.router.Pick(job.Model, tried)
		if !ok && len(tried) > 0 { // every channel tried once: go round again
			clear(tried)
			rt, wait, ok = w.router.Pick(job.Model, tried)
		}
		if !ok && attempt == 1 && w.router.RefreshIfOlder(ctx, job.CreatedAt) == nil {
			// The ingress knew this model when it took the job, so a channel may have been
			// added after this worker last looked.
			rt, wait, ok = w.router.Pick(job.Model, tried)
		}
		if !ok {
			if last != nil {
				return upstreamFailure(last, attempt-1)
			}
			return outcome{status: store.StatusFailed, code: http.StatusServiceUnavailable, err: &APIError{
				Status: http.StatusServiceUnavailable, Type: "overloaded_error", Code: "no_channel", RetryAfter: 5,
				Message: fmt.Sprintf("no upstream channel is available for model %q", job.Model)}}
		}
		// Another channel is tried at once; the same one again only after a backoff, and a
		// cooling one (Retry-After, circuit open) only once it has cooled.
		if rt.Channel.ID == lastChannel {
			wait = max(wait, w.backoff(attempt-1))
		}
		if wait > 0 {
			if dl, ok := ctx.Deadline(); ok && time.Now().Add(wait).After(dl) {
				if last != nil {
					return upstreamFailure(last, attempt-1) // the next try could not finish in time
				}
				return outcome{status: store.StatusFailed, code: http.StatusServiceUnavailable, err: &APIError{
					Status: http.StatusServiceUnavailable, Type: "overloaded_error", Code: "channels_cooling",
					RetryAfter: int(wait.Round(time.Second).Seconds()) + 1,
					Message:    fmt.Sprintf("every upstream channel for model %q is cooling down", job.Model)}}
			}
			if last != nil {
				log.WarnContext(ctx, "upstream failed; retrying", "channel_id", lastChannel, "status", last.StatusCode,
					"err", last, "retry_in", wait)
			}
			pause(ctx, wait)
		}
		if ctx.Err() != nil {
			return w.ended(ctx, job, nil, emitted, rt.Channel.ID, last)
		}
		body, err := job.Body, error(nil)
		if rt.UpstreamModel != job.Model { // the ingress checked the body is an object
			body, err = setModel(job.Body, rt.UpstreamModel)
		}
		if err != nil {
			return outcome{status: store.StatusFailed, code: http.StatusBadRequest, err: &APIError{
				Status: http.StatusBadRequest, Type: "invalid_request_error", Message: "request body must be a JSON object"}}
		}
		began := time.Now()
		res, err := rt.Provider.Do(ctx, &providers.Request{Endpoint: job.Endpoint, Body: body, Stream: job.Stream,
			WantUsageChunk: job.WantUsageChunk}, emit)
		if err == nil {
			w.metrics.upstream.WithLabelValues(rt.Channel.Provider, "ok").Observe(time.Since(began).Seconds())
			w.router.Succeeded(rt.Channel.ID)
			return success(job, res, emitted, rt.Channel.ID)
		}
		perr, isProv := errors.AsType[*providers.Error](err)
		if !isProv {
			perr = &providers.Error{Provider: rt.Channel.Provider, Err: err}
		}
		w.metrics.upstream.WithLabelValues(rt.Channel.Provider, outcomeLabel(perr)).Observe(time.Since(began).Seconds())
		if ctx.Err() != nil {
			return w.ended(ctx, job, res, emitted, rt.Channel.ID, perr)
		}
		if emitted > 0 { // the caller has part of a stream: it cannot be retried
			out := upstreamFailure(perr, attempt)
			out.usage, out.channelID = reportedUsage(res), rt.Channel.ID
			out.charge = out.usage != nil
			return out
		}
		last, lastChannel = perr, rt.Channel.ID
		tried[rt.Channel.ID] = true
		switch {
		case perr.StatusCode == http.StatusUnauthorized || perr.StatusCode == http.StatusForbidden:
			// The channel's own key is bad, not the caller's request: take the channel out of
			// service, visibly, and try another.
			w.disable(ctx, log, rt.Channel.ID, perr)
		case !perr.Retryable():
			return passThrough(perr)
		default:
			w.router.Failed(rt.Channel.ID, perr.RetryAfter)
		}
		if attempt >= w.cfg.MaxAttempts {
			return upstreamFailure(perr, attempt)
		}
	}
}

// disable turns a channel off in Postgres and in this worker's index, and tells the others.
func (w *Worker) disable(ctx context.Context, log *slog.Logger, channelID string, e *providers.Error) {
	w.router.Remove(channelID)
	reason := fmt.Sprintf("upstream rejected the channel's API key (%d) at %s", e.StatusCode, time.Now().UTC().Format(time.RFC3339))
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := w.rec.DisableChannel(dctx, channelID, reason); err != nil {
		log.ErrorContext(ctx, "disable channel", "channel_id", channelID, "err", err)
		return
	}
	log.ErrorContext(ctx, "channel disabled: upstream rejected its API key", "channel_id", channelID, "status", e.StatusCode)
	AnnounceChannelsChanged(w.nc)
}

func (w *Worker) backoff(attempt int) time.Duration {
	d := w.cfg.RetryBase << (attempt - 1)
	d = min(d, w.cfg.RetryMax)
	return d/2 + rand.N(d/2+1) // jitter in [d/2, d]
}

// ended says how a job whose context ended came out: timeout, cancel or shutdown. Only a
// caller who left mid-answer is charged an estimate when the upstream reported no usage
// (the upstream did the work on their behalf); otherwise only reported usage is charged.
func (w *Worker) ended(ctx context.Context, job *Job, res *providers.Result, emitted int, channelID string,
	last *providers.Error,
) outcome {
	cause := context.Cause(ctx)
	reported := reportedUsage(res)
	switch {
	case errors.Is(cause, ErrCanceled):
		return outcome{status: store.StatusCanceled, code: 499, usage: reported, channelID: channelID,
			err: &APIError{Status: 499, Type: "canceled", Code: "job_canceled", Message: "the job was canceled"}}
	case errors.Is(cause, ErrClientGone):
		usage := reported
		if usage == nil && emitted > 0 {
			usage = streamUsage(job, res, emitted)
		}
		return outcome{status: store.StatusCanceled, code: 499, usage: usage, charge: usage != nil, channelID: channelID,
			err: &APIError{Status: 499, Type: "canceled", Code: "client_closed_request", Message: "the client closed the request"}}
	case errors.Is(cause, ErrShutdown):
		return outcome{status: store.StatusFailed, code: http.StatusServiceUnavailable, usage: reported, charge: reported != nil,
			channelID: channelID, err: &APIError{Status: http.StatusServiceUnavailable, Type: "overloaded_error",
				Code: "worker_shutdown", RetryAfter: 1, Message: "the worker running this job shut down mid-answer"}}
	default:
		return timeoutOutcome(reported, channelID)
	}
}

func timeoutOutcome(usage *store.Usage, channelID string) outcome {
	return outcome{status: store.StatusFailed, code: http.StatusGatewayTimeout, usage: usage, charge: usage != nil,
		channelID: channelID, err: &APIError{Status: http.StatusGatewayTimeout, Type: "timeout_error", Code: "job_timeout",
			Message: "no result within the job's deadline"}}
}

// reportedUsage is the usage the upstream reported, or nil.
func reportedUsage(res *providers.Result) *store.Usage {
	if res == nil || res.Usage == nil {
		return nil
	}
	return &store.Usage{PromptTokens: res.Usage.PromptTokens, CompletionTokens: res.Usage.CompletionTokens}
}

func success(job *Job, res *providers.Result, emitted int, channelID string) outcome {
	out := outcome{status: store.StatusSucceeded, code: cmp.Or(res.StatusCode, http.StatusOK), body: res.Body,
		charge: true, channelID: channelID}
	if job.Stream {
		out.body = nil
		out.usage = streamUsage(job, res, emitted)
	} else if res.Usage != nil {
		out.usage = &store.Usage{PromptTokens: res.Usage.PromptTokens, CompletionTokens: res.Usage.CompletionTokens}
	} else {
		out.usage = &store.Usage{PromptTokens: estimateTokens(len(job.Body)), Estimated: true}
	}
	return out
}

// streamUsage is the upstream's reported usage or, if it reported none, an estimate marked
// as such: a quarter of the request's bytes for the prompt, one token per emitted chunk.
func streamUsage(job *Job, res *providers.Result, emitted int) *store.Usage {
	if res != nil && res.Usage != nil {
		return &store.Usage{PromptTokens: res.Usage.PromptTokens, CompletionTokens: res.Usage.CompletionTokens}
	}
	return &store.Usage{PromptTokens: estimateTokens(len(job.Body)), CompletionTokens: int64(emitted), Estimated: true}
}

func estimateTokens(bytes int) int64 { return int64((bytes + 3) / 4) }

// clean makes an upstream's text safe to store and show: valid UTF-8, no NUL.
func clean(s string) string {
	return strings.ToValidUTF8(strings.ReplaceAll(s, "\x00", ""), "\uFFFD")
}

// passThrough returns a caller-fault upstream error with the upstream's status and message.
func passThrough(e *providers.Error) outcome {
	code := e.StatusCode
	if code == 0 { // not an HTTP status: the upstream's answer was unusable
		code = http.StatusBadGateway
		return outcome{status: store.StatusFailed, code: code, err: &APIError{Status: code, Type: "upstream_error",
			Code: "bad_upstream_response", Message: clean(e.Error())}}
	}
	return outcome{status: store.StatusFailed, code: code, err: &APIError{Status: code,
		Type: clean(cmp.Or(e.Type, "invalid_request_error")), Code: clean(e.Code), Message: clean(e.Message)}}
}

// upstreamFailure is the 502 for an upstream that kept failing.
func upstreamFailure(e *providers.Error, attempts int) outcome {
	return outcome{status: store.StatusFailed, code: http.StatusBadGateway, err: &APIError{
		Status: http.StatusBadGateway, Type: "upstream_error", Code: "upstream_failed",
		Message: clean(fmt.Sprintf("upstream failed after %d attempt(s): %s", attempts, e.Error()))}}
}

func outcomeLabel(e *providers.Error) string {
	switch {
	case e.StatusCode != 0:
		return fmt.Sprintf("%dxx", e.StatusCode/100)
	case errors.Is(e, providers.ErrIdle):
		return "idle"
	case errors.Is(e, ErrJobTimeout):
		return "timeout"
	default:
		return "error"
	}
}

// setModel rewrites the body's "model" to the upstream's name for it.
func setModel(body json.RawMessage, model string) (json.RawMessage, error) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(body, &m); err != nil {
		return nil, err
	}
	if m == nil { // the body was null: not an object either
		return nil, errors.New("body is null")
	}
	var cur string
	if json.Unmarshal(m["model"], &cur) == nil && cur == model {
		return body, nil
	}
	b, _ := json.Marshal(model)
	m["model"] = b
	return json.Marshal(m)
}
