package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/sluicehq/sluice/pkg/jobs"
	"github.com/sluicehq/sluice/pkg/providers"
	"github.com/sluicehq/sluice/pkg/route"
	"github.com/sluicehq/sluice/pkg/slots"
	"github.com/sluicehq/sluice/pkg/telemetry"
)

// channelDisabler is what the retry policy needs from Postgres.
type channelDisabler interface {
	DisableChannel(ctx context.Context, id, reason string) error
}

// caller runs a job's upstream attempts: retry, failover and backoff. It sees only the
// router, its own settings and what it reports to; not the pool's bookkeeping.
type caller struct {
	cfg     PoolConfig
	router  *route.Router
	rec     channelDisabler
	limits  channelLimiter // nil: channels' quotas are not paced (tests without Postgres)
	nc      *nats.Conn
	metrics *Metrics
	tracer  *telemetry.Tracer // nil: tracing off
}

// run calls upstream with retries and failover until success, a terminal error, or the end
// of ctx, and says how the job ended. Choosing a channel and judging an attempt are apart
// (choose, judge) so that their temporaries are not on the stack under the upstream call,
// which every in-flight job holds for as long as the upstream takes (see jobs/retry.go).
func (c *caller) run(ctx context.Context, log *slog.Logger, job *jobs.Job, rep *jobs.Replier) outcome {
	at := &attempts{tried: map[string]bool{}}
	emit := func(ev providers.Event) error {
		at.emitted++
		return rep.Event(ev)
	}
	for attempt := 1; ; attempt++ {
		pk, out, again := c.choose(ctx, log, job, at, attempt)
		if again { // the channel filled up or is out of quota while this job waited: no attempt spent
			attempt--
			continue
		}
		if pk == nil {
			return out
		}
		actx, span := c.startAttempt(ctx, job, &pk.rt, attempt)
		res, err := c.call(actx, job, &pk.rt, emit)
		endAttempt(span, res, err)
		pk.paced(res)
		pk.release()
		if out, done := c.judge(ctx, log, job, at, &pk.rt, attempt, res, err); done {
			return out
		}
	}
}

// attempts is what a job's attempts carry from one to the next.
type attempts struct {
	tried       map[string]bool // channels tried in this round
	last        *providers.Error
	lastChannel string
	emitted     int // stream events sent to the caller
}

// pick is the channel an attempt runs on, acquired and paced: release and paced end both.
type pick struct {
	rt      route.Target
	release func()
	paced   func(*providers.Result)
}

// choose picks the channel for attempt and waits for it to be usable. It returns the pick;
// or again, when the channel filled up or ran out of quota meanwhile (pick again, no attempt
// spent); or, with a nil pick, how the job ended (no channel left, no time left).
func (c *caller) choose(ctx context.Context, log *slog.Logger, job *jobs.Job, at *attempts, attempt int) (
	pk *pick, out outcome, again bool) {
	rt, wait, ok := c.router.Pick(job.Model, at.tried)
	if !ok && len(at.tried) > 0 { // every channel tried once: go round again
		clear(at.tried)
		rt, wait, ok = c.router.Pick(job.Model, at.tried)
	}
	if !ok && attempt == 1 && c.router.RefreshIfOlder(ctx, job.CreatedAt) == nil {
		// The ingress knew this model when it took the job, so a channel may have been
		// added after this worker last looked.
		rt, wait, ok = c.router.Pick(job.Model, at.tried)
	}
	if !ok {
		if at.last != nil {
			return nil, upstreamFailure(at.last, attempt-1).on(at.lastChannel), false
		}
		e := jobs.Overloaded("no_channel", fmt.Sprintf("No upstream channel is available for model %q.", job.Model))
		e.RetryAfter = 5
		return nil, failed(e), false
	}
	// Another channel is tried at once; the same one again only after a backoff, and a
	// cooling one (Retry-After, circuit open) only once it has cooled.
	if rt.Channel.ID == at.lastChannel {
		wait = max(wait, c.backoff(attempt-1))
	}
	if wait > 0 {
		if dl, ok := ctx.Deadline(); ok && time.Now().Add(wait).After(dl) {
			if at.last != nil {
				return nil, upstreamFailure(at.last, attempt-1).on(at.lastChannel), false // the next try could not finish in time
			}
			e := jobs.Overloaded("channels_cooling", fmt.Sprintf("Every upstream channel for model %q is cooling down.", job.Model))
			e.RetryAfter = int(wait.Round(time.Second).Seconds()) + 1
			return nil, failed(e), false
		}
		if at.last != nil {
			log.WarnContext(ctx, "upstream failed; retrying", "channel_id", at.lastChannel, "status", at.last.StatusCode,
				"err", at.last, "retry_in", wait)
		}
		slots.Sleep(ctx, wait)
	}
	if ctx.Err() != nil {
		return nil, ended(ctx, job, nil, at.emitted, rt.Channel.ID), false
	}
	release, free := c.router.Acquire(rt)
	if !free {
		return nil, outcome{}, true
	}
	paced, wait, free := c.pace(ctx, log, job, rt)
	if !free {
		release()
		c.router.Defer(rt.Channel.ID, wait)
		c.metrics.deferred.Inc()
		return nil, outcome{}, true
	}
	return &pick{rt: rt, release: release, paced: paced}, outcome{}, false
}

// judge says whether the job ends with attempt's result (res, err) on rt, and how; if it
// does not, the next attempt follows, with what this one taught noted in at.
func (c *caller) judge(ctx context.Context, log *slog.Logger, job *jobs.Job, at *attempts, rt *route.Target, attempt int,
	res *providers.Result, err error) (outcome, bool) {
	if err == nil {
		out := success(job, res, at.emitted, rt.Channel.ID)
		out.upstreamModel = rt.UpstreamModel
		return out, true
	}
	perr, isProv := errors.AsType[*providers.Error](err)
	if !isProv {
		perr = &providers.Error{Provider: rt.Channel.Provider, Err: err}
	}
	if errors.Is(err, errNotObject) {
		return failed(jobs.BadRequest("", "The request body must be a JSON object.")), true
	}
	if ctx.Err() != nil {
		out := ended(ctx, job, res, at.emitted, rt.Channel.ID)
		out.upstreamModel = rt.UpstreamModel
		return out, true
	}
	if at.emitted > 0 { // the caller has part of a stream: it cannot be retried
		out := upstreamFailure(perr, attempt).withUsage(reportedUsage(res), rt.Channel.ID)
		out.upstreamModel = rt.UpstreamModel
		return out, true
	}
	at.last, at.lastChannel = perr, rt.Channel.ID
	at.tried[rt.Channel.ID] = true
	switch {
	case perr.BadCredential():
		// The channel's own key is bad, not the caller's request: take the channel out of
		// service, visibly, and try another. Any other 401/403 (a content filter, a file
		// the upstream cannot read) is about this request and fails this job alone.
		c.disable(ctx, log, rt.Channel.ID, perr)
	case !perr.Retryable():
		return passThrough(perr).on(rt.Channel.ID), true
	default:
		c.router.Failed(rt.Channel.ID, perr.RetryAfter)
	}
	if attempt >= c.cfg.MaxAttempts {
		return upstreamFailure(perr, attempt).on(rt.Channel.ID), true
	}
	return outcome{}, false
}

// errNotObject: the job's body could not be rewritten for the upstream's model name.
var errNotObject = errors.New("request body is not a JSON object")

// call makes one upstream call on rt and records its metrics; a success closes the
// channel's circuit (failures are judged by run).
func (c *caller) call(ctx context.Context, job *jobs.Job, rt *route.Target, emit func(providers.Event) error) (*providers.Result, error) {
	body := job.Body
	if rt.UpstreamModel != job.Model { // the ingress checked the body is an object
		var err error
		if body, err = setModel(job.Body, rt.UpstreamModel); err != nil {
			return nil, errNotObject
		}
	}
	began := time.Now()
	res, err := rt.Provider.Do(ctx, &providers.Request{Endpoint: job.Endpoint, Body: body, Stream: job.Stream,
		WantUsageChunk: job.WantUsageChunk}, emit)
	label := "ok"
	if err == nil {
		c.router.Succeeded(rt.Channel.ID)
	} else if perr, ok := errors.AsType[*providers.Error](err); ok {
		label = outcomeLabel(perr)
	} else {
		label = "error"
	}
	c.metrics.upstream.WithLabelValues(rt.Channel.Provider, label).Observe(time.Since(began).Seconds())
	c.metrics.attempts.WithLabelValues(rt.Channel.ID, attemptOutcome(ctx, err)).Inc()
	return res, err
}

// disable turns a channel off in Postgres and in this worker's index, and tells the others.
func (c *caller) disable(ctx context.Context, log *slog.Logger, channelID string, e *providers.Error) {
	c.router.Remove(channelID)
	reason := fmt.Sprintf("upstream rejected the channel's API key (%d) at %s", e.StatusCode, time.Now().UTC().Format(time.RFC3339))
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := c.rec.DisableChannel(dctx, channelID, reason); err != nil {
		log.ErrorContext(ctx, "disable channel", "channel_id", channelID, "err", err)
		return
	}
	log.ErrorContext(ctx, "channel disabled: upstream rejected its API key", "channel_id", channelID, "status", e.StatusCode)
	route.AnnounceChannelsChanged(c.nc)
}

// backoff is the wait before retry attempt (1, 2, …) on the same channel: RetryBase doubled
// each time, capped at RetryMax, with jitter in [d/2, d].
func (c *caller) backoff(attempt int) time.Duration {
	d := c.cfg.RetryBase << (attempt - 1)
	d = min(d, c.cfg.RetryMax)
	return d/2 + rand.N(d/2+1)
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
