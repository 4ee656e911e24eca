package jobs

import (
	"encoding/json"
	"time"

	"github.com/sluicehq/sluice/pkg/store"
)

// Object renders a job as API.md's job object. GET /v1/jobs/{id} and webhook bodies both use
// it, so a webhook receiver sees exactly what a poller would.
func Object(j *store.Job) map[string]any {
	unix := func(t *time.Time) any {
		if t == nil {
			return nil
		}
		return t.Unix()
	}
	o := map[string]any{
		"id": j.ID, "object": "job", "status": j.Status, "endpoint": j.Endpoint, "model": j.Model,
		"created_at": j.CreatedAt.Unix(), "started_at": unix(j.StartedAt), "finished_at": unix(j.FinishedAt),
		"attempts": j.Attempts, "metadata": j.Metadata, "usage": nil, "cost_usd": j.CostUSD, "response": nil, "error": nil,
	}
	if j.Metadata == nil {
		o["metadata"] = map[string]string{}
	}
	if j.PromptTokens != nil && j.CompletionTokens != nil {
		o["usage"] = map[string]int64{"prompt_tokens": *j.PromptTokens, "completion_tokens": *j.CompletionTokens,
			"total_tokens": *j.PromptTokens + *j.CompletionTokens}
	}
	code := 0
	if j.StatusCode != nil {
		code = *j.StatusCode
	}
	if j.Status == store.StatusSucceeded {
		o["response"] = map[string]any{"status_code": code, "body": j.Response}
	}
	if len(j.Error) > 0 {
		var e map[string]any
		if json.Unmarshal(j.Error, &e) == nil {
			delete(e, "retry_after")
			e["status_code"] = code
			o["error"] = e
		}
	}
	return o
}
