package ingress

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/sluicehq/sluice/pkg/ids"
	"github.com/sluicehq/sluice/pkg/jobs"
	"github.com/sluicehq/sluice/pkg/jsonscan"
	"github.com/sluicehq/sluice/pkg/store"
)

// parsed is a validated request.
type parsed struct {
	model     string
	stream    bool
	wantUsage bool
	body      json.RawMessage
}

// readBody reads at most MaxBodyBytes of a JSON body: 413 beyond, 415 for another content type.
func (s *Server) readBody(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	if ct := r.Header.Get("Content-Type"); ct != "" {
		mt, _, err := mime.ParseMediaType(ct)
		if err != nil || (mt != "application/json" && !strings.HasSuffix(mt, "+json")) {
			return nil, apiError(http.StatusUnsupportedMediaType, "invalid_request_error", "unsupported_media_type",
				"The body must be JSON (Content-Type: application/json).")
		}
	}
	if r.ContentLength > s.maxBody {
		return nil, tooLarge(s.maxBody)
	}
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.maxBody))
	if err != nil {
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			return nil, tooLarge(s.maxBody)
		}
		return nil, badRequest("", "Could not read the request body.")
	}
	return b, nil
}

func tooLarge(limit int64) error {
	return apiError(http.StatusRequestEntityTooLarge, "invalid_request_error", "request_too_large",
		fmt.Sprintf("The request body is larger than the limit of %d bytes.", limit))
}

// parseRequest validates a body for endpoint.
func parseRequest(endpoint string, body []byte, allowStream bool) (*parsed, error) {
	body = bytes.TrimSpace(body)
	if len(body) == 0 || body[0] != '{' {
		return nil, badRequest("", "The body must be a JSON object.")
	}
	// encoding/json lets invalid UTF-8 through inside strings, but no upstream and no
	// Postgres text column takes it: refuse it here rather than fail the job later.
	if !utf8.Valid(body) {
		return nil, badRequest("", "The body must be valid UTF-8.")
	}
	// The body is forwarded untouched, so read its fields by their exact names, as the
	// upstream will. (A struct would match them case-insensitively: {"streAm":true} would
	// be validated as a stream here and sent upstream as none.) Only the members checked
	// here are looked at; the rest are not decoded. A repeated member counts as its last
	// occurrence, as in encoding/json and the upstreams' JSON parsers.
	if !json.Valid(body) {
		var v any
		return nil, badRequest("", "We could not parse the JSON body of your request: "+jsonProblem(json.Unmarshal(body, &v)))
	}
	var req struct{ model, stream, streamOptions, messages, maxTokens, prompt, input []byte }
	_ = jsonscan.Members(body, func(k, v []byte) bool { // an object: checked above
		switch string(k) {
		case "model":
			req.model = v
		case "stream":
			req.stream = v
		case "stream_options":
			req.streamOptions = v
		case "messages":
			req.messages = v
		case "max_tokens":
			req.maxTokens = v
		case "prompt":
			req.prompt = v
		case "input":
			req.input = v
		}
		return true
	})
	p := &parsed{body: body}
	if err := json.Unmarshal(req.model, &p.model); err != nil || strings.TrimSpace(p.model) == "" {
		return nil, badRequest("model", "'model' is required and must be a non-empty string.")
	}
	if !optionalJSON(req.stream, &p.stream) {
		return nil, badRequest("stream", "'stream' must be a boolean.")
	}
	if p.stream && !allowStream {
		return nil, badRequest("stream", "'stream' must be absent or false here.")
	}
	if !jsonscan.IsNull(req.streamOptions) {
		var include []byte
		_ = jsonscan.Members(req.streamOptions, func(k, v []byte) bool {
			if string(k) == "include_usage" {
				include = v
			}
			return true
		})
		if req.streamOptions[0] != '{' || !optionalJSON(include, &p.wantUsage) {
			return nil, badRequest("stream_options", "'stream_options' must be an object with a boolean 'include_usage'.")
		}
	}
	switch endpoint {
	case jobs.EndpointChat, jobs.EndpointMessages:
		n, bad := 0, -1
		if len(req.messages) == 0 || req.messages[0] != '[' {
			return nil, badRequest("messages", "'messages' is required and must be a non-empty array.")
		}
		_ = jsonscan.Elements(req.messages, func(m []byte) bool {
			if m[0] != '{' {
				bad = n
				return false
			}
			n++
			return true
		})
		if bad >= 0 {
			return nil, badRequest(fmt.Sprintf("messages[%d]", bad), "Each message must be an object.")
		}
		if n == 0 {
			return nil, badRequest("messages", "'messages' is required and must be a non-empty array.")
		}
		if endpoint == jobs.EndpointMessages {
			var n int
			if err := json.Unmarshal(req.maxTokens, &n); err != nil || n < 1 {
				return nil, badRequest("max_tokens", "'max_tokens' is required and must be a positive integer.")
			}
		}
	case jobs.EndpointCompletions:
		if jsonscan.IsNull(req.prompt) {
			return nil, badRequest("prompt", "'prompt' is required.")
		}
	case jobs.EndpointEmbeddings:
		if p.stream {
			return nil, badRequest("stream", "Embeddings cannot be streamed.")
		}
		if jsonscan.IsNull(req.input) {
			return nil, badRequest("input", "'input' is required.")
		}
	default:
		return nil, badRequest("endpoint", fmt.Sprintf("Unknown endpoint %q.", endpoint))
	}
	return p, nil
}

// optionalJSON decodes raw into v unless it is absent or null; it reports whether raw was
// absent, null or a valid v.
func optionalJSON(raw json.RawMessage, v any) bool {
	return len(raw) == 0 || string(raw) == "null" || json.Unmarshal(raw, v) == nil
}

// jsonProblem describes a JSON error without echoing the input.
func jsonProblem(err error) string {
	if se, ok := errors.AsType[*json.SyntaxError](err); ok {
		return fmt.Sprintf("syntax error at byte %d.", se.Offset)
	}
	if te, ok := errors.AsType[*json.UnmarshalTypeError](err); ok {
		return fmt.Sprintf("'%s' has the wrong type.", te.Field)
	}
	return "invalid JSON."
}

// admit checks the key may use the model: 403 if not allowed, 404 if nobody serves it, 429
// once the budget is spent.
func (s *Server) admit(k *store.Key, model string) error {
	if !k.AllowsModel(model) {
		return &jobs.APIError{Status: http.StatusForbidden, Type: "permission_error", Code: "model_not_allowed",
			Param: "model", Message: fmt.Sprintf("This API key may not use the model %q.", model)}
	}
	if !s.router.Has(model) {
		return &jobs.APIError{Status: http.StatusNotFound, Type: "not_found_error", Code: "model_not_found",
			Param: "model", Message: fmt.Sprintf("The model %q does not exist or you do not have access to it.", model)}
	}
	if k.OverBudget() {
		return apiError(http.StatusTooManyRequests, "insufficient_quota", "insufficient_quota",
			"You exceeded your current quota: this API key's budget is spent.")
	}
	return nil
}

// limit applies the key's rpm and max_concurrency limits to a new job (429
// rate_limit_exceeded with Retry-After when over). A slot taken here is freed when the job's
// row ends, or by the caller with store.ReleaseSlot if the job is never accepted.
func (s *Server) limit(ctx context.Context, k *store.Key, jobID string, deadline time.Time) error {
	if k.RPM != nil {
		ok, wait, err := s.store.AllowRequest(ctx, k.ID, *k.RPM, time.Now())
		if err != nil {
			return errOverloaded("The database is unavailable; retry shortly.")
		}
		if !ok {
			e := apiError(http.StatusTooManyRequests, "rate_limit_error", "rate_limit_exceeded",
				fmt.Sprintf("Rate limit reached: this API key may make %d requests per minute.", *k.RPM))
			e.RetryAfter = int(wait.Round(time.Second).Seconds())
			return e
		}
	}
	if k.MaxConcurrency != nil {
		// The slot outlives the deadline as long as the worker may still be recording and
		// the sweeper has not yet ended the job (its row's end frees the slot sooner).
		ok, err := s.store.AcquireSlot(ctx, k.ID, jobID, *k.MaxConcurrency, deadline.Add(7*time.Minute))
		if err != nil {
			return errOverloaded("The database is unavailable; retry shortly.")
		}
		if !ok {
			e := apiError(http.StatusTooManyRequests, "rate_limit_error", "rate_limit_exceeded",
				fmt.Sprintf("Concurrency limit reached: this API key may run %d jobs at once.", *k.MaxConcurrency))
			e.RetryAfter = 1
			return e
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

// runSync publishes a job and writes its answer as the worker replies.
func (s *Server) runSync(w http.ResponseWriter, r *http.Request, key *store.Key, endpoint string, p *parsed) {
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
	if err := s.limit(r.Context(), key, job.ID, job.Deadline); err != nil {
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
	replies, lost := waiter.C(), waiter.Lost()
	job.Reply = waiter.Subject
	w.Header().Set("Sluice-Job-Id", job.ID)
	if _, err := s.pub.Publish(r.Context(), job); err != nil {
		if key.MaxConcurrency != nil {
			_ = s.store.ReleaseSlot(context.WithoutCancel(r.Context()), job.ID)
		}
		s.writeError(w, r, publishError(err))
		return
	}
	a := &answer{s: s, w: w, r: r, job: job}
	// Wait a little past the deadline: the worker's own timeout answer is more precise.
	timer := time.NewTimer(time.Until(job.Deadline) + 2*time.Second)
	defer timer.Stop()
	for {
		select {
		case <-s.mux.Reconnected():
			// Replies sent while NATS was away are lost; the result may already be stored.
			if a.fromStore() {
				return
			}
		case <-lost:
			// A reply was dropped because this caller read too slowly. A stream cannot be
			// repaired; a whole answer can be read from Postgres once the job has ended.
			lost = nil
			if a.job.Stream {
				a.fail(apiError(http.StatusBadGateway, "upstream_error", "stream_gap",
					"The client read the stream too slowly and part of it was lost; the stream is incomplete."))
				_ = jobs.CancelJob(s.nc, job.ID, jobs.CancelUser)
				return
			}
			a.gap = true
			if s.awaitStore(a, job) {
				return
			}
		case m := <-replies:
			rep, err := jobs.ParseReply(m)
			if err != nil {
				continue
			}
			if a.handle(rep) {
				return
			}
		case <-timer.C:
			if a.fromStore() {
				return
			}
			_ = jobs.CancelJob(s.nc, job.ID, jobs.CancelClientGone)
			a.fail(apiError(http.StatusGatewayTimeout, "timeout_error", "job_timeout", "No result within the job's deadline."))
			return
		case <-r.Context().Done():
			// The caller left: abort the upstream call (the worker records what it cost), and
			// if no worker has taken the job yet, make sure none ever runs it.
			_ = jobs.CancelJob(s.nc, job.ID, jobs.CancelClientGone)
			ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), 5*time.Second)
			defer cancel()
			if err := s.store.AbandonJob(ctx, store.NewJob{ID: job.ID, KeyID: job.KeyID, Endpoint: job.Endpoint,
				Model: job.Model, CreatedAt: job.CreatedAt, Deadline: job.Deadline,
				HoldsSlot: job.HoldsSlot}); err != nil { // a sync call's prompt is not kept
				s.log.WarnContext(ctx, "record abandoned job", "job_id", job.ID, "err", err)
			}
			return
		}
	}
}

func publishError(err error) error {
	if errors.Is(err, jobs.ErrTooLarge) {
		return apiError(http.StatusRequestEntityTooLarge, "invalid_request_error", "request_too_large",
			"The request is too large to queue.")
	}
	if errors.Is(err, jobs.ErrQueueFull) {
		return errOverloaded("The job queue is full; retry shortly.")
	}
	return errOverloaded("The job queue is unavailable; retry shortly.")
}

// answer assembles one job's reply messages into an HTTP response.
type answer struct {
	s       *Server
	w       http.ResponseWriter
	r       *http.Request
	job     *jobs.Job
	attempt int
	next    int  // expected sequence number
	started bool // SSE headers and at least one event written
	gap     bool // a message was lost: the body must come from Postgres
	body    bytes.Buffer
	partial bytes.Buffer // the parts so far of an event split across messages
}

// handle takes one reply message; it returns true when the response is complete.
func (a *answer) handle(rep jobs.Reply) bool {
	if rep.Attempt != a.attempt {
		if rep.Attempt < a.attempt {
			return false // a late message from an earlier delivery
		}
		if a.started {
			a.streamError(apiError(http.StatusBadGateway, "upstream_error", "stream_interrupted",
				"The worker running this stream stopped; the stream is incomplete."))
			// The caller will not get this run's output: cancel it uncharged, as a
			// cancelled job is (CancelUser), rather than bill an estimate for output never seen.
			_ = jobs.CancelJob(a.s.nc, a.job.ID, jobs.CancelUser)
			return true
		}
		a.attempt, a.next, a.gap = rep.Attempt, 0, false // a redelivery starts over
		a.body.Reset()
		a.partial.Reset()
	}
	if rep.Seq != a.next {
		// A lost body part can be read back from Postgres, but a lost stream event cannot
		// (streamed answers are not stored): a stream with a hole, started or not, must end
		// in an error, never as if complete.
		if a.started || a.job.Stream {
			a.fail(apiError(http.StatusBadGateway, "upstream_error", "stream_gap",
				"Part of the stream was lost in transit; the stream is incomplete."))
			// The caller will not get this run's output: cancel it uncharged, as a
			// cancelled job is (CancelUser), rather than bill an estimate for output never seen.
			_ = jobs.CancelJob(a.s.nc, a.job.ID, jobs.CancelUser)
			return true
		}
		a.gap = true
	}
	a.next = rep.Seq + 1
	switch rep.Kind {
	case jobs.KindEvent:
		if rep.More || a.partial.Len() > 0 { // an event larger than one message, in parts
			a.partial.Write(rep.Data)
			if rep.More {
				return false
			}
			a.event(rep.Event, a.partial.Bytes())
			a.partial.Reset()
			return false
		}
		a.event(rep.Event, rep.Data)
	case jobs.KindBody:
		a.body.Write(rep.Data)
	case jobs.KindFinal:
		if rep.Final.Parts != rep.Seq {
			a.gap = true
		}
		a.body.Write(rep.Data) // a whole answer may come with its final
		a.final(rep.Final)
		return true
	}
	return false
}

func (a *answer) event(name string, data []byte) {
	if !a.started {
		h := a.w.Header()
		h.Set("Content-Type", "text/event-stream")
		h.Set("Cache-Control", "no-cache")
		h.Set("X-Accel-Buffering", "no")
		a.w.WriteHeader(http.StatusOK)
		a.started = true
	}
	var buf bytes.Buffer
	if name != "" {
		buf.WriteString("event: ")
		buf.WriteString(name)
		buf.WriteByte('\n')
	}
	buf.WriteString("data: ")
	buf.Write(data)
	buf.WriteString("\n\n")
	_, _ = a.w.Write(buf.Bytes())
	_ = http.NewResponseController(a.w).Flush()
}

func (a *answer) final(f *jobs.Final) {
	if a.started {
		if f.Status == store.StatusSucceeded {
			if a.job.Endpoint != jobs.EndpointMessages { // Anthropic streams end with message_stop
				_, _ = io.WriteString(a.w, "data: [DONE]\n\n")
			}
			_ = http.NewResponseController(a.w).Flush()
			return
		}
		a.streamError(f.Error)
		return
	}
	if f.Status != store.StatusSucceeded {
		if f.Error == nil {
			f.Error = apiError(http.StatusBadGateway, "upstream_error", "", "The job failed.")
		}
		a.fail(f.Error)
		return
	}
	body := a.body.Bytes()
	if a.gap || (len(body) == 0 && !a.job.Stream) {
		// A reply part went missing in transit; the stored result is complete.
		row, err := a.s.store.Job(a.r.Context(), a.job.KeyID, a.job.ID)
		if err != nil {
			a.fail(fmt.Errorf("read result of %s after a lost reply: %w", a.job.ID, err))
			return
		}
		body = row.Response
	}
	if a.job.Stream { // a stream that produced no events at all
		a.event("", []byte(`{"choices":[]}`))
		a.final(f)
		return
	}
	a.w.Header().Set("Content-Type", "application/json")
	a.w.WriteHeader(f.StatusCode)
	_, _ = a.w.Write(body)
}

// awaitStore waits, checking Postgres every second, for a job whose final reply may have
// been dropped, and answers from the stored row; it gives up at the job's deadline.
func (s *Server) awaitStore(a *answer, job *jobs.Job) bool {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			if a.fromStore() {
				return true
			}
			if time.Now().After(job.Deadline.Add(2 * time.Second)) {
				a.fail(apiError(http.StatusGatewayTimeout, "timeout_error", "job_timeout", "No result within the job's deadline."))
				return true
			}
		case <-a.r.Context().Done():
			return true
		}
	}
}

// fromStore answers from Postgres if the job has already ended there (its reply was lost);
// it returns false if the job is still running.
func (a *answer) fromStore() bool {
	row, err := a.s.store.Job(a.r.Context(), a.job.KeyID, a.job.ID)
	if err != nil || !row.Terminal() {
		return false
	}
	f := jobs.FinalFromJob(&row)
	if a.job.Stream && a.started {
		// Some events may be missing and streams are not stored: end in an error, never
		// in a [DONE] that would vouch for a stream we cannot check.
		a.streamError(apiError(http.StatusBadGateway, "upstream_error", "stream_lost",
			"Part of the stream may have been lost in transit; the stream is incomplete."))
		return true
	}
	if a.job.Stream && !a.started && f.Status == store.StatusSucceeded {
		// Streamed answers are not stored, so there is nothing to replay: say so plainly.
		a.fail(apiError(http.StatusBadGateway, "upstream_error", "stream_lost",
			"The job succeeded but its stream was lost in transit (NATS was unavailable); retry the request."))
		return true
	}
	a.gap = true // the body comes from the stored row
	a.final(f)
	return true
}

func (a *answer) fail(err error) {
	if a.started {
		e, ok := errors.AsType[*jobs.APIError](err)
		if !ok {
			e = apiError(http.StatusInternalServerError, "internal_error", "", "internal error")
		}
		a.streamError(e)
		return
	}
	a.s.writeError(a.w, a.r, err)
}

// streamError ends a started stream with an error event and no [DONE], so no client can
// mistake a cut stream for a complete one.
func (a *answer) streamError(e *jobs.APIError) {
	if e == nil {
		e = apiError(http.StatusBadGateway, "upstream_error", "", "The stream failed.")
	}
	b, _ := json.Marshal(errorJSON(a.r, e))
	if a.job.Endpoint == jobs.EndpointMessages {
		_, _ = fmt.Fprintf(a.w, "event: error\ndata: %s\n\n", b)
	} else {
		_, _ = fmt.Fprintf(a.w, "data: %s\n\n", b)
	}
	_ = http.NewResponseController(a.w).Flush()
}
