package webhook

import (
	"encoding/json"

	"github.com/sluicehq/sluice/pkg/store"
	"github.com/sluicehq/sluice/pkg/tokens"
)

// JobObject is API.md's job object, its fields in the documented order.
type JobObject struct {
	ID         string            `json:"id"`
	Object     string            `json:"object"` // "job"
	Status     string            `json:"status"`
	Endpoint   string            `json:"endpoint"`
	Model      string            `json:"model"`
	CreatedAt  int64             `json:"created_at"`
	StartedAt  *int64            `json:"started_at"`
	FinishedAt *int64            `json:"finished_at"`
	Attempts   int               `json:"attempts"`
	Metadata   map[string]string `json:"metadata"`
	Usage      *tokens.Usage     `json:"usage"`
	CostUSD    *float64          `json:"cost_usd"`
	Response   *JobResponse      `json:"response"`
	Error      map[string]any    `json:"error"`
}

// JobResponse is a succeeded job's answer.
type JobResponse struct {
	StatusCode int             `json:"status_code"`
	Body       json.RawMessage `json:"body"`
}

// Object renders a job as API.md's job object. GET /v1/jobs/{id} and webhook bodies both use
// it, so a webhook receiver sees exactly what a poller would.
func Object(j *store.Job) *JobObject {
	o := &JobObject{ID: j.ID, Object: "job", Status: j.Status, Endpoint: j.Endpoint, Model: j.Model,
		CreatedAt: j.CreatedAt.Unix(), Attempts: j.Attempts, Metadata: j.Metadata, CostUSD: j.CostUSD}
	if j.StartedAt != nil {
		t := j.StartedAt.Unix()
		o.StartedAt = &t
	}
	if j.FinishedAt != nil {
		t := j.FinishedAt.Unix()
		o.FinishedAt = &t
	}
	if o.Metadata == nil {
		o.Metadata = map[string]string{}
	}
	if j.PromptTokens != nil && j.CompletionTokens != nil {
		o.Usage = &tokens.Usage{PromptTokens: *j.PromptTokens, CompletionTokens: *j.CompletionTokens}
	}
	code := 0
	if j.StatusCode != nil {
		code = *j.StatusCode
	}
	if j.Status == store.StatusSucceeded {
		o.Response = &JobResponse{StatusCode: code, Body: j.Response}
	}
	if len(j.Error) > 0 {
		var e map[string]any
		if json.Unmarshal(j.Error, &e) == nil {
			delete(e, "retry_after")
			e["status_code"] = code
			o.Error = e
		}
	}
	return o
}
