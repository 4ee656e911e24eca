package ingress

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/sluicehq/sluice/pkg/ids"
	"github.com/sluicehq/sluice/pkg/jobs"
	"github.com/sluicehq/sluice/pkg/jsonscan"
	"github.com/sluicehq/sluice/pkg/store"
	"github.com/sluicehq/sluice/pkg/webhook"
)

// submission is the body of POST /v1/jobs.
type submission struct {
	Endpoint string            `json:"endpoint"`
	Body     json.RawMessage   `json:"body"`
	Metadata map[string]string `json:"metadata"`
	Webhook  *struct {
		URL string `json:"url"`
	} `json:"webhook"`
	TimeoutS *int `json:"timeout_s"`
	model    string
}

// parseSubmission reads a POST /v1/jobs body: its members by their exact names (the last of
// a repeated one), each decoded on its own; the request body is kept as it came.
func parseSubmission(raw []byte) (submission, error) {
	var sub submission
	if !utf8.Valid(raw) {
		return sub, badRequest("", "The body must be valid UTF-8.")
	}
	if !json.Valid(raw) {
		var v any
		return sub, badRequest("", "We could not parse the JSON body of your request: "+jsonProblem(json.Unmarshal(raw, &v)))
	}
	var bad string
	err := jsonscan.Members(raw, func(k, v []byte) bool {
		var dst any
		switch string(k) {
		case "body":
			sub.Body = v
		case "endpoint":
			dst = &sub.Endpoint
		case "metadata":
			md, err := parseMetadata(v)
			if err != nil {
				bad = "metadata"
				return false
			}
			sub.Metadata = md
		case "webhook":
			dst = &sub.Webhook
		case "timeout_s":
			dst = &sub.TimeoutS
		}
		if dst != nil && json.Unmarshal(v, dst) != nil {
			bad = string(k)
			return false
		}
		return true
	})
	switch {
	case err != nil:
		return sub, badRequest("", "The body must be a JSON object.")
	case bad == "metadata":
		return sub, badRequest(bad, "'metadata' must be an object of string values (or null).")
	case bad != "":
		return sub, badRequest(bad, fmt.Sprintf("'%s' has the wrong type.", bad))
	}
	return sub, nil
}

// parseMetadata reads a job's metadata: null (as if absent, as OpenAI takes it) or an
// object whose every value is a string. encoding/json alone would read {"a": null} into a
// map[string]string as "a": "", and a number as an error only by luck of the type.
func parseMetadata(raw []byte) (map[string]string, error) {
	if jsonscan.IsNull(raw) {
		return nil, nil
	}
	md := map[string]string{}
	var bad error
	err := jsonscan.Members(raw, func(k, v []byte) bool {
		if len(v) == 0 || v[0] != '"' {
			bad = errors.New("not a string")
			return false
		}
		var s string
		if bad = json.Unmarshal(v, &s); bad != nil {
			return false
		}
		md[string(k)] = s
		return true
	})
	return md, cmp.Or(err, bad)
}

var asyncEndpoints = map[string]bool{jobs.EndpointChat: true, jobs.EndpointCompletions: true,
	jobs.EndpointEmbeddings: true, jobs.EndpointMessages: true, jobs.EndpointResponses: true}

// submitJob serves POST /v1/jobs.
func (s *Server) submitJob(w http.ResponseWriter, r *http.Request) {
	key, err := s.authenticate(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	raw, err := s.readBody(w, r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	sub, err := parseSubmission(raw)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if !asyncEndpoints[sub.Endpoint] {
		s.writeError(w, r, badRequest("endpoint", fmt.Sprintf("'endpoint' must be one of %s, %s, %s, %s, %s.",
			jobs.EndpointChat, jobs.EndpointCompletions, jobs.EndpointEmbeddings, jobs.EndpointMessages, jobs.EndpointResponses)))
		return
	}
	p, err := parseRequest(sub.Endpoint, sub.Body, false)
	if err != nil {
		if e, ok := errors.AsType[*jobs.APIError](err); ok && e.Param != "" {
			e.Param = "body." + e.Param
		}
		s.writeError(w, r, err)
		return
	}
	sub.Body, sub.model = p.body, p.model
	if err := s.admit(&key, p.model); err != nil {
		s.writeError(w, r, err)
		return
	}
	s.submit(w, r, &key, sub)
}

// submit stores an async job as queued, publishes it, and answers 202 with the job object
// (200 with the earlier job for a repeated Idempotency-Key).
func (s *Server) submit(w http.ResponseWriter, r *http.Request, key *store.Key, sub submission) {
	if len(sub.Metadata) > 16 {
		s.writeError(w, r, badRequest("metadata", "'metadata' may hold at most 16 pairs."))
		return
	}
	for k, v := range sub.Metadata {
		if strings.ContainsRune(k, 0) || strings.ContainsRune(v, 0) {
			s.writeError(w, r, badRequest("metadata", "Metadata must not contain NUL characters."))
			return
		}
		if len(k) > 64 || len(v) > 512 {
			s.writeError(w, r, badRequest("metadata", "Metadata keys are at most 64 characters and values at most 512."))
			return
		}
	}
	timeout := s.cfg.JobTimeout
	if sub.TimeoutS != nil {
		if *sub.TimeoutS < 1 || time.Duration(*sub.TimeoutS)*time.Second > s.cfg.JobTimeout {
			s.writeError(w, r, badRequest("timeout_s", fmt.Sprintf("'timeout_s' must be between 1 and %d.",
				int(s.cfg.JobTimeout.Seconds()))))
			return
		}
		timeout = time.Duration(*sub.TimeoutS) * time.Second
	}
	hookURL := ""
	if sub.Webhook != nil {
		hookURL = sub.Webhook.URL
		if err := webhook.CheckURL(r.Context(), hookURL, s.cfg.WebhookAllowPrivate); err != nil {
			s.writeError(w, r, badRequest("webhook.url", err.Error()))
			return
		}
	}
	idem := r.Header.Get("Idempotency-Key") // checked at the edge (checkInput)
	now := time.Now()
	job := &jobs.Job{ID: ids.NewAt("job", now), KeyID: key.ID, Endpoint: sub.Endpoint, Model: sub.model, Body: sub.Body,
		Async: true, CreatedAt: now, Deadline: now.Add(timeout), HoldsSlot: key.MaxConcurrency != nil}
	if err := s.limit(r.Context(), w, key, job); err != nil {
		s.writeError(w, r, err)
		return
	}
	nj := job.Row(0)
	nj.Metadata, nj.WebhookURL = sub.Metadata, hookURL
	var (
		row     store.Job
		created = true
		err     error
		pubErr  error
	)
	pctx, pspan := s.startPublish(r.Context(), w, job)
	if idem != "" {
		row, created, err = s.store.CreateQueuedJob(pctx, nj, idem)
		if err == nil && created {
			_, pubErr = s.pub.Publish(pctx, job)
		}
	} else {
		res := s.queue.create(pctx, nj, job)
		err, pubErr = res.dbErr, res.pubErr
		row = store.QueuedJob(&nj)
	}
	endSpan(pspan, cmp.Or(err, pubErr))
	if err != nil {
		if !errors.Is(err, store.ErrPermanent) {
			err = errDBUnavailable()
		}
		s.writeError(w, r, err)
		return
	}
	if !created && key.MaxConcurrency != nil {
		_ = s.store.ReleaseSlot(r.Context(), job.ID) // the earlier job holds its own slot
	}
	w.Header().Set("Sluice-Job-Id", row.ID)
	if !created {
		writeJSON(w, http.StatusOK, jobObject(&row))
		return
	}
	if err := pubErr; err != nil {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), 5*time.Second)
		defer cancel()
		// A publish whose acks were all lost (a stream leader killed mid-publish) may still
		// have been stored: if a worker has already taken the job, it was accepted after all.
		if got, gerr := s.store.Job(ctx, key.ID, job.ID); gerr == nil && got.Status != store.StatusQueued {
			s.jobLog(r.Context(), job.RequestID(), job.ID).InfoContext(r.Context(),
				"publish unconfirmed, but a worker has the job", "status", got.Status)
			writeJSON(w, http.StatusAccepted, jobObject(&got))
			return
		}
		// Not accepted: end the row now so it never reads queued forever.
		e, _ := errors.AsType[*jobs.APIError](publishError(err))
		b, _ := json.Marshal(e)
		if _, ferr := s.store.FinishJob(ctx, store.Outcome{JobID: job.ID, Status: store.StatusFailed,
			StatusCode: e.Status, Error: b}); ferr != nil {
			s.jobLog(r.Context(), job.RequestID(), job.ID).WarnContext(r.Context(), "mark unpublished job failed", "err", ferr)
		}
		if idem != "" {
			if ferr := s.store.ForgetIdempotencyKey(ctx, key.ID, idem, job.ID); ferr != nil {
				s.jobLog(r.Context(), job.RequestID(), job.ID).WarnContext(r.Context(), "free idempotency key", "err", ferr)
			}
		}
		s.writeError(w, r, e)
		return
	}
	writeJSON(w, http.StatusAccepted, jobObject(&row))
}

// getJob serves GET /v1/jobs/{id}[?wait=30s].
func (s *Server) getJob(w http.ResponseWriter, r *http.Request) {
	key, err := s.authenticate(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	id := r.PathValue("id")
	var wait time.Duration
	if v := r.URL.Query().Get("wait"); v != "" {
		wait, err = parseWait(v)
		if err != nil {
			s.writeError(w, r, badRequest("wait", "'wait' must be a duration of at most 60s, like 30s."))
			return
		}
	}
	var woke <-chan struct{}
	if wait > 0 {
		ch, stop := s.done.Wait(id) // before the read, so an end in between is not missed
		defer stop()
		woke = ch
	}
	// A read slot is held while the row is read and written, not during the wait.
	release, err := s.takeRead(r.Context())
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	defer func() { release() }()
	row, err := s.job(r.Context(), key.ID, id)
	if err != nil {
		s.writeJobError(w, r, id, err)
		return
	}
	if wait > 0 && !row.Terminal() {
		release()
		t := time.NewTimer(wait)
		defer t.Stop()
		select {
		case <-woke:
		case <-t.C:
		case <-r.Context().Done():
			return
		}
		if release, err = s.takeRead(r.Context()); err != nil {
			s.writeError(w, r, err)
			return
		}
		if row, err = s.job(r.Context(), key.ID, id); err != nil {
			s.writeJobError(w, r, id, err)
			return
		}
	}
	w.Header().Set("Sluice-Job-Id", row.ID)
	writeJob(w, &row)
}

func parseWait(v string) (time.Duration, error) {
	d, err := time.ParseDuration(v)
	if err != nil {
		n, nerr := strconv.Atoi(v)
		if nerr != nil {
			return 0, err
		}
		d = time.Duration(n) * time.Second
	}
	if d < 0 || d > 60*time.Second {
		return 0, errors.New("out of range")
	}
	return d, nil
}

func (s *Server) writeJobError(w http.ResponseWriter, r *http.Request, id string, err error) {
	if errors.Is(err, store.ErrNotFound) {
		s.writeError(w, r, apiError(http.StatusNotFound, "not_found_error", "job_not_found",
			fmt.Sprintf("No job with id %q.", id)))
		return
	}
	if errors.Is(err, store.ErrPermanent) {
		s.writeError(w, r, err) // a 400: input that should have been refused at the edge
		return
	}
	s.writeError(w, r, errDBUnavailable())
}

// listJobs serves GET /v1/jobs?status=&limit=&after=.
func (s *Server) listJobs(w http.ResponseWriter, r *http.Request) {
	key, err := s.authenticate(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	q := r.URL.Query()
	status := q.Get("status")
	switch status {
	case "", store.StatusQueued, store.StatusRunning, store.StatusSucceeded, store.StatusFailed, store.StatusCanceled:
	default:
		s.writeError(w, r, badRequest("status", "'status' must be queued, running, succeeded, failed or canceled."))
		return
	}
	limit := 20
	if v := q.Get("limit"); v != "" {
		if limit, err = strconv.Atoi(v); err != nil || limit < 1 || limit > 100 {
			s.writeError(w, r, badRequest("limit", "'limit' must be between 1 and 100."))
			return
		}
	}
	after := q.Get("after")
	if after != "" && !strings.HasPrefix(after, "job_") {
		s.writeError(w, r, badRequest("after", "'after' must be a job id."))
		return
	}
	release, err := s.takeRead(r.Context())
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	defer release()
	rows, more, err := s.store.ListJobs(r.Context(), key.ID, status, after, limit)
	if err != nil {
		s.writeError(w, r, errDBUnavailable())
		return
	}
	list := map[string]any{"object": "list", "data": []any{}, "first_id": nil, "last_id": nil, "has_more": more}
	data := make([]any, 0, len(rows))
	for i := range rows {
		data = append(data, jobObject(&rows[i]))
	}
	list["data"] = data
	if len(rows) > 0 {
		list["first_id"], list["last_id"] = rows[0].ID, rows[len(rows)-1].ID
	}
	writeJSON(w, http.StatusOK, list)
}

// cancelJob serves POST /v1/jobs/{id}/cancel.
func (s *Server) cancelJob(w http.ResponseWriter, r *http.Request) {
	key, err := s.authenticate(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	id := r.PathValue("id")
	row, err := s.store.CancelJob(r.Context(), key.ID, id)
	if err != nil {
		s.writeJobError(w, r, id, err)
		return
	}
	if !row.Terminal() {
		// A job whose outcome waits in the outcomes stream for a settler has ended: answer
		// it as GET does, not as cancelling.
		if ended, err := s.job(r.Context(), key.ID, id); err == nil && ended.Terminal() {
			row = ended
		} else {
			_ = jobs.CancelJob(s.nc, id, jobs.CancelUser) // the worker aborts the upstream call and records it
		}
	}
	w.Header().Set("Sluice-Job-Id", row.ID)
	writeJSON(w, http.StatusOK, jobObject(&row))
}

// statusCancelling is the status an API answer shows for a job that a cancel has been
// asked of but that has not ended yet (its worker is aborting it), as OpenAI's batch
// cancel answers "cancelling". It is never stored: the row reads running (or queued) with
// cancel_requested until the job ends, as canceled or — if it finished first — as it ended.
const statusCancelling = "cancelling"

// jobObject renders a job as API.md's job object (shared with webhook bodies), showing an
// unfinished job with a cancel requested as cancelling.
func jobObject(j *store.Job) *webhook.JobObject {
	o := webhook.Object(j)
	if !j.Terminal() && j.CancelRequested {
		o.Status = statusCancelling
	}
	return o
}
