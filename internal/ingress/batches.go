package ingress

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/sluicehq/sluice/pkg/batches"
	"github.com/sluicehq/sluice/pkg/files"
	"github.com/sluicehq/sluice/pkg/ids"
	"github.com/sluicehq/sluice/pkg/jobs"
	"github.com/sluicehq/sluice/pkg/jsonscan"
	"github.com/sluicehq/sluice/pkg/webhook"
)

// batchEndpoints are the endpoints a batch may run (OpenAI's, those Sluice has).
var batchEndpoints = map[string]bool{jobs.EndpointChat: true, jobs.EndpointCompletions: true, jobs.EndpointEmbeddings: true,
	jobs.EndpointResponses: true}

// batchObject renders b as OpenAI's batch object.
func batchObject(b *batches.Batch) map[string]any { return batches.Object(b) }

func errBatchNotFound(id string) error {
	return apiError(http.StatusNotFound, "invalid_request_error", "batch_not_found", fmt.Sprintf("No batch with id %q.", id))
}

func (s *Server) writeBatchError(w http.ResponseWriter, r *http.Request, err error) {
	if errors.Is(err, batches.ErrNotFound) {
		s.writeError(w, r, errBatchNotFound(r.PathValue("id")))
		return
	}
	s.writeError(w, r, errDBUnavailable())
}

// createBatch serves POST /v1/batches.
func (s *Server) createBatch(w http.ResponseWriter, r *http.Request) {
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
	if !json.Valid(raw) {
		s.writeError(w, r, badRequest("", "The body must be a JSON object."))
		return
	}
	var req struct{ inputFile, endpoint, window, hook string }
	var md map[string]string
	bad := ""
	err = jsonscan.Members(raw, func(k, v []byte) bool {
		var dst *string
		switch string(k) {
		case "input_file_id":
			dst = &req.inputFile
		case "endpoint":
			dst = &req.endpoint
		case "completion_window":
			dst = &req.window
		case "webhook": // Sluice's own member, as on POST /v1/jobs: {"url": …}
			var h *struct {
				URL string `json:"url"`
			}
			if json.Unmarshal(v, &h) != nil {
				bad = "webhook"
				return false
			}
			if h != nil {
				req.hook = h.URL
			}
		case "metadata":
			var merr error
			if md, merr = parseMetadata(v); merr != nil {
				bad = "metadata"
				return false
			}
		}
		if dst != nil && json.Unmarshal(v, dst) != nil {
			bad = string(k)
			return false
		}
		return true
	})
	switch {
	case err != nil:
		err = badRequest("", "The body must be a JSON object.")
	case bad != "":
		err = badRequest(bad, fmt.Sprintf("'%s' has the wrong type.", bad))
	case req.inputFile == "":
		err = badRequest("input_file_id", "'input_file_id' is required.")
	case !batchEndpoints[req.endpoint]:
		err = badRequest("endpoint", fmt.Sprintf("'endpoint' must be one of %s, %s, %s, %s.", jobs.EndpointChat,
			jobs.EndpointCompletions, jobs.EndpointEmbeddings, jobs.EndpointResponses))
	case req.window != "24h":
		err = badRequest("completion_window", "'completion_window' must be \"24h\".")
	default:
		err = checkMetadata(md)
	}
	if err == nil && req.hook != "" {
		if herr := webhook.CheckURL(r.Context(), req.hook, s.cfg.WebhookAllowPrivate); herr != nil {
			err = badRequest("webhook.url", herr.Error())
		}
	}
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	f, err := s.files.Get(r.Context(), key.ID, req.inputFile)
	if errors.Is(err, files.ErrNotFound) || (err == nil && f.Purpose != files.PurposeBatch) {
		s.writeError(w, r, apiError(http.StatusBadRequest, "invalid_request_error", "invalid_input_file",
			fmt.Sprintf("No batch input file with id %q.", req.inputFile)))
		return
	}
	if err != nil {
		s.writeError(w, r, errDBUnavailable())
		return
	}
	now := time.Now()
	b, err := s.batches.Create(r.Context(), batches.Batch{ID: ids.NewAt("batch", now), KeyID: key.ID, Kind: batches.KindOpenAI,
		Endpoint: req.endpoint, InputFileID: f.ID, Metadata: md, ExpiresAt: now.Add(jobs.BatchWindow), WebhookURL: req.hook})
	if err != nil {
		s.writeError(w, r, errDBUnavailable())
		return
	}
	writeJSON(w, http.StatusOK, batchObject(&b))
}

// checkMetadata checks metadata as a job's is checked (16 pairs, 64/512 characters, no NUL).
func checkMetadata(md map[string]string) error {
	if len(md) > 16 {
		return badRequest("metadata", "'metadata' may hold at most 16 pairs.")
	}
	for k, v := range md {
		if strings.ContainsRune(k, 0) || strings.ContainsRune(v, 0) {
			return badRequest("metadata", "Metadata must not contain NUL characters.")
		}
		if len(k) > 64 || len(v) > 512 {
			return badRequest("metadata", "Metadata keys are at most 64 characters and values at most 512.")
		}
	}
	return nil
}

// getBatch serves GET /v1/batches/{id}.
func (s *Server) getBatch(w http.ResponseWriter, r *http.Request) {
	key, err := s.authenticate(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	b, err := s.batches.Get(r.Context(), key.ID, r.PathValue("id"))
	if err != nil || b.Kind != batches.KindOpenAI {
		s.writeBatchError(w, r, cmpErr(err, batches.ErrNotFound))
		return
	}
	writeJSON(w, http.StatusOK, batchObject(&b))
}

// cmpErr is err, or def if err is nil.
func cmpErr(err, def error) error {
	if err != nil {
		return err
	}
	return def
}

// listBatches serves GET /v1/batches?limit=&after=.
func (s *Server) listBatches(w http.ResponseWriter, r *http.Request) {
	key, err := s.authenticate(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	q := r.URL.Query()
	limit, err := listLimit(q.Get("limit"), 100)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	bs, more, err := s.batches.List(r.Context(), key.ID, batches.KindOpenAI, q.Get("after"), limit)
	if err != nil {
		s.writeError(w, r, errDBUnavailable())
		return
	}
	data := make([]any, 0, len(bs))
	for i := range bs {
		data = append(data, batchObject(&bs[i]))
	}
	writeList(w, data, more, func(i int) string { return bs[i].ID })
}

// cancelBatch serves POST /v1/batches/{id}/cancel: the batch reads cancelling until the
// lines running at the cancel have finished (they are charged), then cancelled, with the
// output of what ran.
func (s *Server) cancelBatch(w http.ResponseWriter, r *http.Request) {
	key, err := s.authenticate(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	b, err := s.batches.Get(r.Context(), key.ID, r.PathValue("id"))
	if err == nil && b.Kind != batches.KindOpenAI {
		err = batches.ErrNotFound
	}
	if err == nil {
		b, err = s.batches.Cancel(r.Context(), key.ID, b.ID)
	}
	if err != nil {
		s.writeBatchError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, batchObject(&b))
}
