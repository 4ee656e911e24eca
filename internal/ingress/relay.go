package ingress

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/sluicehq/sluice/pkg/ids"
	"github.com/sluicehq/sluice/pkg/jobs"
	"github.com/sluicehq/sluice/pkg/store"
)

// admit checks the key may use the model: 404 if nobody serves it (whatever the key's
// allowlist, as OpenAI answers an unknown model), 403 if it exists but the key or its team
// may not use it, 429 once the key's or the team's budget (of the current period) is spent.
func (s *Server) admit(k *store.Key, model string) error {
	if !s.router.Has(model) {
		return &jobs.APIError{Status: http.StatusNotFound, Type: "not_found_error", Code: "model_not_found",
			Param: "model", Message: fmt.Sprintf("The model %q does not exist or you do not have access to it.", model)}
	}
	if !k.AllowsModel(model) {
		return &jobs.APIError{Status: http.StatusForbidden, Type: "permission_error", Code: "model_not_allowed",
			Param: "model", Message: fmt.Sprintf("This API key may not use the model %q.", model)}
	}
	if t := k.Team; t != nil && !t.AllowsModel(model) {
		return &jobs.APIError{Status: http.StatusForbidden, Type: "permission_error", Code: "model_not_allowed",
			Param: "model", Message: fmt.Sprintf("This API key's team may not use the model %q.", model)}
	}
	now := s.now()
	if k.OverBudget(now) {
		return apiError(http.StatusTooManyRequests, "insufficient_quota", "insufficient_quota",
			"You exceeded your current quota: this API key's budget is spent.")
	}
	if t := k.Team; t != nil {
		if sp := t.Spend(); sp.Over(now) {
			return apiError(http.StatusTooManyRequests, "insufficient_quota", "insufficient_quota",
				"You exceeded your current quota: this API key's team's budget is spent.")
		}
	}
	return nil
}

// relay serves a sync-style route: publish the job, wait for its answer, stream or whole.
func (s *Server) relay(endpoint string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		key, err := s.authenticate(r)
		if err != nil {
			s.writeError(w, r, err)
			return
		}
		body, err := s.readBody(w, r)
		if err != nil {
			s.writeError(w, r, err)
			return
		}
		async := preferAsync(r)
		p, err := parseRequest(endpoint, body, !async)
		if err != nil {
			s.writeError(w, r, err)
			return
		}
		if err := s.admit(&key, p.model); err != nil {
			s.writeError(w, r, err)
			return
		}
		if async {
			s.submit(w, r, &key, submission{Endpoint: endpoint, Body: p.body, model: p.model})
			return
		}
		s.runSync(w, r, &key, endpoint, p)
	}
}

func preferAsync(r *http.Request) bool {
	for _, v := range r.Header.Values("Prefer") {
		for _, part := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(part), "respond-async") {
				return true
			}
		}
	}
	return false
}

// runSync publishes a job and writes its answer as the worker replies. Its phases are
// apart (cache, publish, wait) so that none widens the frame the others run below: a
// held request keeps the stack its deepest moment needed (see jobs/retry.go).
func (s *Server) runSync(w http.ResponseWriter, r *http.Request, key *store.Key, endpoint string, p *parsed) {
	fill, served := s.cacheLookup(w, r, key, endpoint, p)
	if served {
		return
	}
	select {
	case s.waiting <- struct{}{}:
		defer func() { <-s.waiting }()
	default:
		s.writeError(w, r, errOverloaded("Too many requests are waiting; retry shortly."))
		return
	}
	now := time.Now()
	job := &jobs.Job{ID: ids.NewAt("job", now), KeyID: key.ID, Endpoint: endpoint, Model: p.model, Body: p.body,
		Stream: p.stream, WantUsageChunk: p.wantUsage, CreatedAt: now, Deadline: now.Add(s.cfg.JobTimeout),
		HoldsSlot: key.MaxConcurrency != nil}
	if err := s.limit(r.Context(), w, key, job); err != nil {
		s.writeError(w, r, err)
		return
	}
	// A whole answer comes in one message, or in up to 64 parts if it is larger than NATS's
	// max payload (64 MB at the default 1 MB, the worker's default answer limit); a stream
	// needs room for bursts of events while the client is written to. Past the buffer a
	// whole answer is read back from Postgres, a stream ends in an error.
	buf := 66
	if p.stream {
		buf = 256
	}
	waiter := s.mux.Wait(buf)
	defer waiter.Done()
	job.Reply = waiter.Subject
	job.ReplyByOutcome = !p.stream // a whole answer comes as its stored outcome (jobs/republish.go)
	w.Header().Set("Sluice-Job-Id", job.ID)
	if !s.publishSync(w, r, key, job) {
		return
	}
	a := newAnswer(s, w, r, job)
	a.cache = fill
	s.awaitAnswer(r, a, waiter)
}

// cacheLookup answers a request from the response cache when it may (served), or returns
// the fill that stores its answer there; nil when the request is not cached.
func (s *Server) cacheLookup(w http.ResponseWriter, r *http.Request, key *store.Key, endpoint string, p *parsed) (
	fill *cacheFill, served bool) {
	ttl := s.cacheTTL(r, key)
	if ttl <= 0 {
		return nil, false
	}
	name, ok := cacheKey(key.ID, endpoint, p.stream, p.body)
	if !ok {
		return nil, false
	}
	if e, hit := s.cache.get(r.Context(), name, s.now()); hit {
		s.serveHit(w, r, key, endpoint, p, e)
		return nil, true
	}
	w.Header().Set("Sluice-Cache", "miss")
	return &cacheFill{name: name, ttl: ttl}, false
}

// publishSync queues a sync job; when that fails it answers the caller and returns false.
func (s *Server) publishSync(w http.ResponseWriter, r *http.Request, key *store.Key, job *jobs.Job) bool {
	pctx, pspan := s.startPublish(r.Context(), w, job)
	_, err := s.pub.Publish(pctx, job)
	endSpan(pspan, err)
	if err == nil {
		return true
	}
	if errors.Is(err, jobs.ErrUnavailable) {
		// A try may have been stored with its ack lost: the caller is told 503, so
		// that job must not run (workers drop a queued job cancelled this way).
		_ = jobs.CancelJob(s.nc, job.ID, jobs.CancelClientGone)
	}
	if key.MaxConcurrency != nil {
		_ = s.store.ReleaseSlot(context.WithoutCancel(r.Context()), job.ID)
	}
	s.writeError(w, r, publishError(err))
	return false
}

// awaitAnswer writes a published job's answer as its replies come, until it has ended, the
// caller has left, or the job's deadline has passed.
func (s *Server) awaitAnswer(r *http.Request, a *answer, waiter *jobs.Waiter) {
	job := a.job
	replies, lost := waiter.C(), waiter.Lost()
	// Wait a little past the deadline: the worker's own timeout answer is more precise.
	timer := time.NewTimer(time.Until(job.Deadline) + 2*time.Second)
	defer timer.Stop()
	// After a reconnect the job's end may be recorded without its reply ever arriving (sent
	// while this process was away); from then on the store is checked every second too.
	var recheck <-chan time.Time
	for {
		select {
		case <-s.mux.Reconnected():
			// Replies sent while NATS was away are lost; the result may already be stored.
			if a.fromStore() {
				return
			}
			if recheck == nil {
				t := time.NewTicker(time.Second)
				defer t.Stop()
				recheck = t.C
			}
		case <-recheck:
			if a.fromStore() {
				return
			}
		case <-lost:
			// A reply was dropped because this caller read too slowly. A stream cannot be
			// repaired; a whole answer can be read from Postgres once the job has ended.
			lost = nil
			if a.dropped() || a.awaitStore() {
				return
			}
		case m := <-replies:
			rep, err := jobs.ParseReply(m)
			if err != nil {
				if jobs.Republished(m) { // an answer this ingress cannot read: take it from the store
					if a.fromStore() || a.awaitStore() {
						return
					}
				}
				continue
			}
			s.traceReply(r.Context(), m, &rep)
			if a.handle(rep) {
				return
			}
		case <-timer.C:
			if a.fromStore() {
				return
			}
			_ = jobs.CancelJob(s.nc, job.ID, jobs.CancelClientGone)
			a.fail(jobs.Timeout())
			return
		case <-r.Context().Done():
			s.clientGone(r, job)
			return
		}
	}
}

// clientGone ends a sync job whose caller left, or stopped reading until a write to it
// failed: it aborts the upstream call (the worker records what it cost, a client_gone
// cancel being charged), and if no worker has taken the job yet, makes sure none ever runs it.
func (s *Server) clientGone(r *http.Request, job *jobs.Job) {
	_ = jobs.CancelJob(s.nc, job.ID, jobs.CancelClientGone)
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), 5*time.Second)
	defer cancel()
	if err := s.store.AbandonJob(ctx, job.Row(0)); err != nil { // a sync call's prompt is not kept
		s.jobLog(ctx, job.RequestID(), job.ID).WarnContext(ctx, "record abandoned job", "err", err)
	}
}

func publishError(err error) error {
	if errors.Is(err, jobs.ErrTooLarge) {
		return apiError(http.StatusRequestEntityTooLarge, "invalid_request_error", "request_too_large",
			"The request is too large to queue.")
	}
	if errors.Is(err, jobs.ErrKeyQueueFull) {
		// The key's own cap (KEY_MAX_QUEUED), not the gateway's: a rate limit on this tenant.
		e := apiError(http.StatusTooManyRequests, "rate_limit_error", "rate_limit_exceeded",
			"Too many jobs are queued for this API key; retry when some have finished.")
		e.RetryAfter = 1
		return e
	}
	if errors.Is(err, jobs.ErrQueueFull) {
		return errOverloaded("The job queue is full; retry shortly.")
	}
	return errOverloaded("The job queue is unavailable; retry shortly.")
}
