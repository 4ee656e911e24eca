package ingress

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/sluicehq/sluice/pkg/jobs"
	"github.com/sluicehq/sluice/pkg/jsonscan"
)

// The OpenAI Responses API (POST /v1/responses) at the edge: what its body must hold, and
// how a Responses stream ends when it cannot complete. The translation itself is the
// providers' (pkg/providers, translate_responses*.go); here the job is an ordinary job.

// checkResponses validates a Responses body beyond the members every route checks: input
// is required (a string or an array of item objects), and what Sluice cannot honour on
// any channel is refused rather than dropped: previous_response_id and conversation
// (Sluice keeps no responses, and the channel that served the earlier turn need not serve
// this one) and background (Sluice's own async jobs do that). store is accepted: nothing
// is kept for later retrieval either way.
func checkResponses(body []byte) error {
	var input, previous, conversation, background []byte
	_ = jsonscan.Members(body, func(k, v []byte) bool { // an object: checked by the caller
		switch string(k) {
		case "input":
			input = v
		case "previous_response_id":
			previous = v
		case "conversation":
			conversation = v
		case "background":
			background = v
		}
		return true
	})
	if !jsonscan.IsNull(previous) {
		return badRequest("previous_response_id", "'previous_response_id' is not supported: Sluice keeps no responses "+
			"(store is accepted but nothing is kept for retrieval), so send the earlier turns in 'input'.")
	}
	if !jsonscan.IsNull(conversation) {
		return badRequest("conversation", "'conversation' is not supported: Sluice keeps no conversations; send the earlier turns in 'input'.")
	}
	var bg bool
	if !optionalJSON(background, &bg) {
		return badRequest("background", "'background' must be a boolean.")
	}
	if bg {
		return badRequest("background", "'background' is not supported: send the header 'Prefer: respond-async', or use POST /v1/jobs.")
	}
	switch {
	case jsonscan.IsNull(input):
		return badRequest("input", "'input' is required: a string, or an array of input items.")
	case input[0] == '"':
		return nil
	case input[0] != '[':
		return badRequest("input", "'input' must be a string or an array of input items.")
	}
	n, bad := 0, -1
	_ = jsonscan.Elements(input, func(it []byte) bool {
		if it[0] != '{' {
			bad = n
			return false
		}
		n++
		return true
	})
	if bad >= 0 {
		return badRequest(fmt.Sprintf("input[%d]", bad), "Each input item must be an object.")
	}
	if n == 0 {
		return badRequest("input", "'input' must not be an empty array.")
	}
	return nil
}

// responsesStream follows a Responses stream on its way to the client, so that one which
// cannot complete ends as a Responses client expects: in a response.failed event (next in
// sequence, for the same response), never in a bare error or a silent close.
type responsesStream struct {
	events    int64  // events written: the next event's sequence_number
	id        string // the response's, from response.created
	model     string
	createdAt int64
}

// observe notes one event written to the client.
func (s *responsesStream) observe(data []byte) {
	s.events++
	if s.events > 1 {
		return // only the first event, response.created, names the response
	}
	_ = jsonscan.Members(data, func(k, v []byte) bool {
		if string(k) != "response" {
			return true
		}
		var r struct {
			ID        string `json:"id"`
			Model     string `json:"model"`
			CreatedAt int64  `json:"created_at"`
		}
		if json.Unmarshal(v, &r) == nil {
			s.id, s.model, s.createdAt = r.ID, r.Model, r.CreatedAt
		}
		return false
	})
}

// failed is the response.failed event that ends a stream with e.
func (s *responsesStream) failed(jobID string, e *jobs.APIError) []byte {
	code := e.Code
	if code == "" {
		code = e.Type
	}
	id := s.id
	if id == "" {
		id = "resp_" + strings.TrimPrefix(jobID, "job_")
	}
	created := s.createdAt
	if created == 0 {
		created = time.Now().Unix()
	}
	ev := map[string]any{"type": "response.failed", "sequence_number": s.events, "response": map[string]any{
		"id": id, "object": "response", "created_at": created, "status": "failed", "model": s.model,
		"error": map[string]string{"code": code, "message": e.Message}, "incomplete_details": nil,
		"output": []any{}, "usage": nil,
	}}
	b, _ := json.Marshal(ev)
	var buf bytes.Buffer
	buf.WriteString("event: response.failed\ndata: ")
	buf.Write(b)
	buf.WriteString("\n\n")
	return buf.Bytes()
}

// writeFailed ends a started Responses stream with e.
func (a *answer) writeFailed(e *jobs.APIError) {
	_, _ = a.w.Write(a.resp.failed(a.job.ID, e))
	_ = http.NewResponseController(a.w).Flush()
}
