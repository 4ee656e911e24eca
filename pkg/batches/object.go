package batches

import (
	"encoding/json"
	"strings"
	"time"
)

// unixOrNil is t in Unix seconds, or nil.
func unixOrNil(t *time.Time) any {
	if t == nil {
		return nil
	}
	return t.Unix()
}

// Object renders b as OpenAI's batch object (GET /v1/batches/{id}, and the data of its
// webhook event).
func Object(b *Batch) map[string]any {
	var errs any
	if len(b.Errors) > 0 {
		errs = map[string]any{"object": "list", "data": json.RawMessage(b.Errors)}
	}
	var md any
	if b.Metadata != nil {
		md = b.Metadata
	}
	return map[string]any{"id": b.ID, "object": "batch", "endpoint": b.Endpoint, "errors": errs,
		"input_file_id": b.InputFileID, "completion_window": b.CompletionWindow, "status": b.Status,
		"output_file_id": b.OutputFileID, "error_file_id": b.ErrorFileID, "created_at": b.CreatedAt.Unix(),
		"in_progress_at": unixOrNil(b.InProgressAt), "expires_at": b.ExpiresAt.Unix(),
		"finalizing_at": unixOrNil(b.FinalizingAt), "completed_at": unixOrNil(b.CompletedAt),
		"failed_at": unixOrNil(b.FailedAt), "expired_at": unixOrNil(b.ExpiredAt),
		"cancelling_at": unixOrNil(b.CancellingAt), "cancelled_at": unixOrNil(b.CancelledAt),
		"request_counts": map[string]int{"total": b.Total, "completed": b.Completed, "failed": b.Failed},
		"metadata":       md}
}

// EventType is the webhook event of a batch that ended with status: batch.completed,
// batch.failed, batch.expired or batch.cancelled.
func EventType(status string) string { return "batch." + status }

// eventBody is the webhook body of b, which has just ended: an event in OpenAI's webhook
// shape ({"id", "object": "event", "type", "created_at", "data"}) whose data is the batch
// object as it ends.
func eventBody(b *Batch) []byte {
	body, _ := json.Marshal(map[string]any{"id": "evt_" + strings.TrimPrefix(b.ID, "batch_"), "object": "event",
		"type": EventType(b.Status), "created_at": time.Now().Unix(), "data": Object(b)})
	return body
}
