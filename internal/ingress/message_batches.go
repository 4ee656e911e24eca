package ingress

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	batchrun "github.com/sluicehq/sluice/internal/batches"
	"github.com/sluicehq/sluice/pkg/batches"
	"github.com/sluicehq/sluice/pkg/files"
	"github.com/sluicehq/sluice/pkg/ids"
	"github.com/sluicehq/sluice/pkg/jobs"
)

// Anthropic's Message Batches run on the same machinery as OpenAI's batches: the requests
// of POST /v1/messages/batches are written, as they are read, into an input file of
// OpenAI-format lines for /v1/messages (each checked as the runner will check it, so a bad
// request is refused at once, as Anthropic does), and the batch is a batches row of kind
// anthropic, shown in Anthropic's shapes.

// maxMessageBatch is Anthropic's limit of requests in one batch.
const maxMessageBatch = 100_000

// rfc3339OrNil is t in RFC 3339, or null.
func rfc3339OrNil(t *time.Time) any {
	if t == nil {
		return nil
	}
	return t.UTC().Format(time.RFC3339Nano)
}

// messageBatchObject renders b in Anthropic's shape, with its line counts c.
func (s *Server) messageBatchObject(r *http.Request, b *batches.Batch, c batches.Counts) map[string]any {
	status := "in_progress"
	var ended *time.Time
	switch {
	case b.Status == batches.StatusCancelling:
		status = "canceling"
	case b.Terminal():
		status = "ended"
		ended = firstTime(b.CompletedAt, b.CancelledAt, b.ExpiredAt, b.FailedAt)
	}
	if c.Done == 0 && b.Terminal() { // rows past retention: the batch row's counts
		c = batches.Counts{Done: b.Completed + b.Failed, Succeeded: b.Completed}
	}
	var results any
	if status == "ended" {
		results = "http://" + r.Host + "/v1/messages/batches/" + b.ID + "/results"
	}
	return map[string]any{"id": b.ID, "type": "message_batch", "processing_status": status,
		"request_counts": map[string]int{"processing": max(b.Total-c.Done, 0), "succeeded": c.Succeeded,
			"errored": c.Done - c.Succeeded - c.Canceled - c.Expired, "canceled": c.Canceled, "expired": c.Expired},
		"ended_at": rfc3339OrNil(ended), "created_at": rfc3339OrNil(&b.CreatedAt), "expires_at": rfc3339OrNil(&b.ExpiresAt),
		"archived_at": nil, "cancel_initiated_at": rfc3339OrNil(b.CancellingAt), "results_url": results}
}

func firstTime(ts ...*time.Time) *time.Time {
	for _, t := range ts {
		if t != nil {
			return t
		}
	}
	return nil
}

// messageBatch reads key's Anthropic batch {id} with its counts.
func (s *Server) messageBatch(ctx context.Context, keyID, id string) (batches.Batch, batches.Counts, error) {
	b, err := s.batches.Get(ctx, keyID, id)
	if err == nil && b.Kind != batches.KindAnthropic {
		err = batches.ErrNotFound
	}
	if err != nil {
		return b, batches.Counts{}, err
	}
	c, err := s.batches.LineCounts(ctx, b.ID)
	return b, c, err
}

// createMessageBatch serves POST /v1/messages/batches.
func (s *Server) createMessageBatch(w http.ResponseWriter, r *http.Request) {
	key, err := s.authenticate(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	release, err := s.takeUpload()
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	defer release()
	_ = http.NewResponseController(w).SetReadDeadline(time.Now().Add(uploadReadTimeout))
	body := http.MaxBytesReader(w, r.Body, files.MaxBytes)
	check := batchrun.NewChecker(jobs.EndpointMessages, s.router.Has, key.AllowsModel)
	pr, pw := io.Pipe()
	type stored struct {
		f   files.File
		err error
	}
	done := make(chan stored, 1)
	go func() { // owned here: the handler waits on done below
		f, err := s.files.Create(r.Context(), files.File{ID: newFileID(), KeyID: key.ID, Purpose: files.PurposeBatch,
			Filename: "message_batch.jsonl"}, pr, files.Limits{MaxLines: maxMessageBatch}, nil)
		_ = pr.CloseWithError(io.ErrClosedPipe)
		done <- stored{f, err}
	}()
	n, perr := writeMessageRequests(body, pw, check)
	pw.CloseWithError(perr) // nil: the end of the file
	st := <-done
	if errors.Is(perr, io.ErrClosedPipe) && st.err != nil { // the store stopped reading: say why
		perr = uploadError(st.err)
	}
	switch {
	case perr != nil:
		s.writeError(w, r, perr)
		return
	case errors.Is(st.err, files.ErrEmpty) || n == 0:
		s.writeError(w, r, badRequest("requests", "'requests' must hold at least one request."))
		return
	case st.err != nil:
		s.writeError(w, r, uploadError(st.err))
		return
	}
	now := time.Now()
	b, err := s.batches.Create(r.Context(), batches.Batch{ID: ids.NewAt("batch", now), KeyID: key.ID, Kind: batches.KindAnthropic,
		Endpoint: jobs.EndpointMessages, InputFileID: st.f.ID, Total: n, ExpiresAt: now.Add(jobs.BatchWindow)})
	if err != nil {
		s.writeError(w, r, errDBUnavailable())
		return
	}
	writeJSON(w, http.StatusOK, s.messageBatchObject(r, &b, batches.Counts{}))
}

// writeMessageRequests reads {"requests": [{"custom_id", "params"}, …]} from body as a
// stream and writes each request to w as an input line, checked; it returns how many.
func writeMessageRequests(body io.Reader, w io.Writer, check *batchrun.Checker) (int, error) {
	dec := json.NewDecoder(body)
	bad := func(param, msg string) *jobs.APIError { return badRequest(param, msg) }
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return 0, readProblem(err, bad("", "The body must be a JSON object."))
	}
	n := 0
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return n, readProblem(err, bad("", "The body is not valid JSON."))
		}
		if t != "requests" {
			var skip json.RawMessage
			if err := dec.Decode(&skip); err != nil {
				return n, readProblem(err, bad("", "The body is not valid JSON."))
			}
			continue
		}
		if t, err := dec.Token(); err != nil || t != json.Delim('[') {
			return n, readProblem(err, bad("requests", "'requests' must be an array."))
		}
		for dec.More() {
			var req struct {
				CustomID *string         `json:"custom_id"`
				Params   json.RawMessage `json:"params"`
			}
			if err := dec.Decode(&req); err != nil {
				return n, readProblem(err, bad(fmt.Sprintf("requests[%d]", n), "Each request must be an object."))
			}
			line, _ := json.Marshal(map[string]any{"custom_id": req.CustomID, "method": "POST",
				"url": jobs.EndpointMessages, "body": req.Params})
			if code, param, msg, ok := check.Check(n, line); !ok {
				p := fmt.Sprintf("requests[%d]", n)
				if param == "body" || len(param) > 5 && param[:5] == "body." {
					param = "params" + param[4:]
				}
				if param != "" {
					p += "." + param
				}
				e := bad(p, fmt.Sprintf("requests[%d]: %s", n, msg))
				e.Code = code
				return n, e
			}
			if _, err := w.Write(append(line, '\n')); err != nil {
				return n, readProblem(err, err)
			}
			n++
			if n > maxMessageBatch {
				return n, bad("requests", fmt.Sprintf("A batch holds at most %d requests.", maxMessageBatch))
			}
		}
		if _, err := dec.Token(); err != nil {
			return n, readProblem(err, bad("requests", "'requests' must be an array."))
		}
	}
	return n, nil
}

// readProblem is a body too large as such, anything else as def.
func readProblem(err, def error) error {
	if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
		return uploadError(err)
	}
	return def
}

// getMessageBatch serves GET /v1/messages/batches/{id}.
func (s *Server) getMessageBatch(w http.ResponseWriter, r *http.Request) {
	key, err := s.authenticate(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	b, c, err := s.messageBatch(r.Context(), key.ID, r.PathValue("id"))
	if err != nil {
		s.writeBatchError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, s.messageBatchObject(r, &b, c))
}

// listMessageBatches serves GET /v1/messages/batches?limit=&after_id=.
func (s *Server) listMessageBatches(w http.ResponseWriter, r *http.Request) {
	key, err := s.authenticate(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	q := r.URL.Query()
	limit, err := listLimit(q.Get("limit"), 1000)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	bs, more, err := s.batches.List(r.Context(), key.ID, batches.KindAnthropic, q.Get("after_id"), limit)
	if err != nil {
		s.writeError(w, r, errDBUnavailable())
		return
	}
	data := make([]any, 0, len(bs))
	for i := range bs {
		c, err := s.batches.LineCounts(r.Context(), bs[i].ID)
		if err != nil {
			s.writeError(w, r, errDBUnavailable())
			return
		}
		data = append(data, s.messageBatchObject(r, &bs[i], c))
	}
	page := map[string]any{"data": data, "has_more": more, "first_id": nil, "last_id": nil}
	if len(bs) > 0 {
		page["first_id"], page["last_id"] = bs[0].ID, bs[len(bs)-1].ID
	}
	writeJSON(w, http.StatusOK, page)
}

// cancelMessageBatch serves POST /v1/messages/batches/{id}/cancel.
func (s *Server) cancelMessageBatch(w http.ResponseWriter, r *http.Request) {
	key, err := s.authenticate(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	b, _, err := s.messageBatch(r.Context(), key.ID, r.PathValue("id"))
	if err == nil {
		_, err = s.batches.Cancel(r.Context(), key.ID, b.ID)
	}
	var c batches.Counts
	if err == nil {
		b, c, err = s.messageBatch(r.Context(), key.ID, b.ID)
	}
	if err != nil {
		s.writeBatchError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, s.messageBatchObject(r, &b, c))
}

// deleteMessageBatch serves DELETE /v1/messages/batches/{id}: an ended batch and its files.
func (s *Server) deleteMessageBatch(w http.ResponseWriter, r *http.Request) {
	key, err := s.authenticate(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	b, _, err := s.messageBatch(r.Context(), key.ID, r.PathValue("id"))
	if err == nil {
		err = s.batches.Delete(r.Context(), key.ID, b.ID)
	}
	if errors.Is(err, batches.ErrNotEnded) {
		s.writeError(w, r, badRequest("", "A batch can be deleted once it has ended; cancel it first."))
		return
	}
	if err != nil {
		s.writeBatchError(w, r, err)
		return
	}
	for _, id := range []*string{&b.InputFileID, b.OutputFileID, b.ErrorFileID} {
		if id != nil {
			_ = s.files.Delete(r.Context(), key.ID, *id)
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"id": b.ID, "type": "message_batch_deleted"})
}

// messageBatchResults serves GET /v1/messages/batches/{id}/results: the results of an ended
// batch, JSONL (its output file, then its error file).
func (s *Server) messageBatchResults(w http.ResponseWriter, r *http.Request) {
	key, err := s.authenticate(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	b, _, err := s.messageBatch(r.Context(), key.ID, r.PathValue("id"))
	if err != nil {
		s.writeBatchError(w, r, err)
		return
	}
	if !b.Terminal() {
		s.writeError(w, r, badRequest("", "The batch's results are available once it has ended."))
		return
	}
	w.Header().Set("Content-Type", "application/x-jsonl")
	for _, id := range []*string{b.OutputFileID, b.ErrorFileID} {
		if id == nil {
			continue
		}
		if _, err := s.files.WriteTo(r.Context(), w, *id); err != nil && r.Context().Err() == nil {
			s.log.WarnContext(r.Context(), "batch results cut short", "batch_id", b.ID, "err", err)
			panic(http.ErrAbortHandler)
		}
	}
}
