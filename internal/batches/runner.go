package batches

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"time"

	"github.com/sluicehq/sluice/pkg/batches"
	"github.com/sluicehq/sluice/pkg/files"
	"github.com/sluicehq/sluice/pkg/jobs"
	"github.com/sluicehq/sluice/pkg/slots"
	"github.com/sluicehq/sluice/pkg/store"
)

// Config tunes a Runner. Zero fields take the defaults noted.
type Config struct {
	Tick        time.Duration // how often unfinished batches are looked at (1s)
	Lease       time.Duration // how long a runner holds a batch it works on (30s)
	ExpiryGrace time.Duration // past a batch's expiry, how long lines still running may take to settle (5m)
	MaxLine     int           // largest input line, bytes (what a NATS message can carry: set by the worker)
	PublishMax  int           // lines per publish round (256)
}

func (c Config) withDefaults() Config {
	c.Tick = cmp.Or(c.Tick, time.Second)
	c.Lease = cmp.Or(c.Lease, 30*time.Second)
	c.ExpiryGrace = cmp.Or(c.ExpiryGrace, 5*time.Minute)
	c.MaxLine = cmp.Or(c.MaxLine, 1<<20-16<<10)
	c.PublishMax = cmp.Or(c.PublishMax, 256)
	return c
}

// Models says which models are served (route.Router).
type Models interface{ Has(model string) bool }

// Runner works the unfinished batches of every key, leasing each from Postgres so that one
// runner (of the several worker processes) works a batch at a time; a runner that dies
// loses its lease and another resumes where the batch's row says it stood.
type Runner struct {
	cfg    Config
	db     *batches.Store
	files  *files.Store
	keys   func(ctx context.Context, id string) (store.Key, error)
	models Models
	pub    *jobs.Publisher
	log    *slog.Logger
	// notify, if set, is told of a batch that has just ended (webhooks).
	notify func(ctx context.Context, b *batches.Batch)
}

// NewRunner returns a Runner.
func NewRunner(cfg Config, db *batches.Store, fs *files.Store, keys func(context.Context, string) (store.Key, error),
	models Models, pub *jobs.Publisher, log *slog.Logger,
) *Runner {
	return &Runner{cfg: cfg.withDefaults(), db: db, files: fs, keys: keys, models: models, pub: pub,
		log: log.With("component", "batches")}
}

// OnEnd sets what is told of each batch that ends. Call it before Run.
func (r *Runner) OnEnd(f func(ctx context.Context, b *batches.Batch)) { r.notify = f }

// Run works batches until ctx ends.
func (r *Runner) Run(ctx context.Context) {
	t := time.NewTicker(r.cfg.Tick)
	defer t.Stop()
	for {
		bs, err := r.db.Claim(ctx, 4, r.cfg.Lease)
		if err != nil && ctx.Err() == nil {
			r.log.WarnContext(ctx, "claim batches", "err", err)
		}
		for i := range bs {
			r.step(ctx, &bs[i])
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// step moves batch b on as far as it can now, then gives it back to be looked at a tick later.
func (r *Runner) step(ctx context.Context, b *batches.Batch) {
	log := r.log.With("batch_id", b.ID, "key_id", b.KeyID)
	var err error
	switch b.Status {
	case batches.StatusValidating:
		err = r.validate(ctx, log, b)
	case batches.StatusInProgress, batches.StatusCancelling, batches.StatusFinalizing:
		if b.Status == batches.StatusInProgress && b.Published < b.Total && time.Now().Before(b.ExpiresAt) {
			err = r.publish(ctx, log, b)
		} else {
			err = r.follow(ctx, log, b)
		}
	}
	if err != nil && ctx.Err() == nil {
		log.WarnContext(ctx, "batch step", "status", b.Status, "err", err)
	}
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	_ = r.db.Release(rctx, b.ID, r.cfg.Tick/2)
}

// validate checks every line of b's input file; a batch with any bad line fails with
// OpenAI's errors list (its first 1,000 problems) and runs nothing. A valid one goes in
// progress and is published.
func (r *Runner) validate(ctx context.Context, log *slog.Logger, b *batches.Batch) error {
	fail := func(n int, errs []*lineError) error {
		data, _ := json.Marshal(errs)
		b.Total = n
		ended, err := r.db.FailValidation(ctx, b, time.Now(), data)
		if ended {
			log.InfoContext(ctx, "batch failed validation", "errors", len(errs))
			r.ended(ctx, b)
		}
		return err
	}
	if _, err := r.files.Get(ctx, b.KeyID, b.InputFileID); errors.Is(err, files.ErrNotFound) {
		return fail(0, []*lineError{lineErr(-1, "file_not_found", "input_file_id", "The input file no longer exists.")})
	} else if err != nil {
		return err
	}
	key, err := r.keys(ctx, b.KeyID)
	if err != nil {
		return err
	}
	c := &checker{endpoint: b.Endpoint, served: r.models.Has, allowed: key.AllowsModel, seen: map[[16]byte]bool{}}
	sc := newLineScanner(r.files.Reader(ctx, b.InputFileID), r.cfg.MaxLine)
	var errs []*lineError
	for sc.next() {
		if _, e := c.check(sc.n-1, sc.line, sc.long); e != nil && len(errs) < 1000 {
			errs = append(errs, e)
		}
		if sc.long {
			break
		}
	}
	if err := sc.err(); err != nil {
		return err
	}
	if sc.n == 0 {
		errs = append(errs, lineErr(-1, "empty_file", "input_file_id", "The input file has no lines."))
	}
	if len(errs) > 0 {
		return fail(sc.n, errs)
	}
	if err := r.db.Validated(ctx, b.ID, sc.n); err != nil {
		return err
	}
	b.Total = sc.n
	if b.Status = batches.StatusInProgress; b.Published == 0 {
		log.InfoContext(ctx, "batch validated", "lines", sc.n)
	}
	return r.publish(ctx, log, b)
}

// publish puts b's lines from b.Published on onto the batch stream, PublishMax at a time,
// recording its progress (and renewing its lease) after each round. It stops when a cancel
// is seen; a line published twice (by a runner that took over) is stored once.
func (r *Runner) publish(ctx context.Context, log *slog.Logger, b *batches.Batch) error {
	// Lines were validated; model checks are not repeated (a model removed since then fails
	// its line when it runs, as for any job).
	c := &checker{endpoint: b.Endpoint, served: func(string) bool { return true }, allowed: func(string) bool { return true },
		seen: map[[16]byte]bool{}}
	sc := newLineScanner(r.files.Reader(ctx, b.InputFileID), r.cfg.MaxLine)
	round := make([]*jobs.Job, 0, r.cfg.PublishMax)
	size := 0
	counted := time.Now()
	flush := func() error {
		if len(round) == 0 {
			return nil
		}
		for {
			errs := r.pub.PublishAll(ctx, round)
			if err := errors.Join(errs...); err == nil {
				break
			} else if ctx.Err() != nil {
				return err
			} else {
				log.WarnContext(ctx, "publish batch lines; retrying", "err", err)
			}
			if _, err := r.db.Published(ctx, b.ID, b.Published, r.cfg.Lease); err != nil {
				return err
			}
			slots.Sleep(ctx, time.Second)
		}
		b.Published += len(round)
		round, size = round[:0], 0
		if time.Since(counted) >= r.cfg.Tick { // lines run while the rest are published: keep counts live
			counted = time.Now()
			if c, err := r.db.LineCounts(ctx, b.ID); err == nil {
				_ = r.db.SaveCounts(ctx, b.ID, c)
			}
		}
		st, err := r.db.Published(ctx, b.ID, b.Published, r.cfg.Lease)
		if err != nil {
			return err
		}
		if st != batches.StatusInProgress {
			b.Status = st
			return errStopPublishing
		}
		return nil
	}
	now := time.Now()
	for sc.next() {
		p, e := c.check(sc.n-1, sc.line, sc.long)
		if sc.n <= b.Published {
			continue
		}
		if e != nil { // validation missed it: end the line failed, and go on
			if err := flush(); err != nil {
				return ignoreStop(err)
			}
			if err := r.db.EndMissing(ctx, b, sc.n-1, sc.n, store.StatusFailed, http.StatusBadRequest,
				errJSON(e.Code, e.Message)); err != nil {
				return err
			}
			b.Published++ // handled: the watermark passes it
			continue
		}
		round = append(round, &jobs.Job{ID: jobs.BatchLineID(b.ID, sc.n-1), KeyID: b.KeyID, Endpoint: b.Endpoint,
			Model: p.model, Body: append(json.RawMessage(nil), p.body...), CreatedAt: now, Deadline: b.ExpiresAt,
			Batch: b.ID, Line: sc.n - 1, CustomID: p.customID})
		size += len(p.body)
		if len(round) >= r.cfg.PublishMax || size >= 8<<20 {
			if err := flush(); err != nil {
				return ignoreStop(err)
			}
		}
	}
	if err := sc.err(); err != nil {
		return err
	}
	if err := flush(); err != nil {
		return ignoreStop(err)
	}
	if b.Published < b.Total { // the file is shorter than validated: end the rest
		return r.db.EndMissing(ctx, b, b.Published, b.Total, store.StatusFailed, http.StatusBadRequest,
			errJSON("missing_line", "The line is missing from the input file."))
	}
	log.InfoContext(ctx, "batch published", "lines", b.Published)
	return nil
}

var errStopPublishing = errors.New("batch no longer in progress")

func ignoreStop(err error) error {
	if errors.Is(err, errStopPublishing) {
		return nil
	}
	return err
}

// errJSON is an error object for a line that never ran (the jobs.APIError shape).
func errJSON(code, message string) []byte {
	b, _ := json.Marshal(map[string]string{"code": code, "message": message, "type": "batch_error"})
	return b
}

// Error codes of lines that never ran, as OpenAI's error file names them.
const (
	codeExpired   = "batch_expired"
	codeCancelled = "batch_cancelled"
)

// follow records b's live counts and ends it once every line has: completed (finalizing,
// then the output files), cancelled once the lines running at the cancel have finished, or
// expired after its window (lines not run by then end batch_expired).
func (r *Runner) follow(ctx context.Context, log *slog.Logger, b *batches.Batch) error {
	c, err := r.db.LineCounts(ctx, b.ID)
	if err != nil {
		return err
	}
	if err := r.db.SaveCounts(ctx, b.ID, c); err != nil {
		return err
	}
	now := time.Now()
	final := ""
	switch {
	case b.Status == batches.StatusCancelling:
		if c.Done < b.Published {
			return nil // lines still in the stream (workers end them cancelled) or running
		}
		if err := r.db.EndMissing(ctx, b, b.Published, b.Total, store.StatusCanceled, jobs.StatusClientClosed,
			errJSON(codeCancelled, "The batch was cancelled before this request ran.")); err != nil {
			return err
		}
		final = batches.StatusCancelled
	case b.Status == batches.StatusFinalizing || c.Done >= b.Total:
		if err := r.db.Finalizing(ctx, b.ID); err != nil {
			return err
		}
		final = batches.StatusCompleted
	case !now.Before(b.ExpiresAt):
		if c.Done < b.Published && now.Before(b.ExpiresAt.Add(r.cfg.ExpiryGrace)) {
			return nil // lines cut at the expiry are still being recorded
		}
		if err := r.db.EndMissing(ctx, b, 0, b.Total, store.StatusFailed, http.StatusRequestTimeout,
			errJSON(codeExpired, "This request could not be executed before the completion window expired.")); err != nil {
			return err
		}
		final = batches.StatusExpired
	default:
		return nil
	}
	return r.finalize(ctx, log, b, final)
}

// ended tells whoever listens that b has ended.
func (r *Runner) ended(ctx context.Context, b *batches.Batch) {
	if r.notify != nil {
		r.notify(ctx, b)
	}
}
