package jobs

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// Endpoints a job may run.
const (
	EndpointChat        = "/v1/chat/completions"
	EndpointCompletions = "/v1/completions"
	EndpointEmbeddings  = "/v1/embeddings"
	EndpointMessages    = "/v1/messages"
)

// Job is the message a worker runs.
type Job struct {
	ID       string          `json:"id"`
	KeyID    string          `json:"key_id"`
	Endpoint string          `json:"endpoint"`
	Model    string          `json:"model"`
	Body     json.RawMessage `json:"body"`
	// Stream is true when the caller wants server-sent events.
	Stream bool `json:"stream,omitempty"`
	// WantUsageChunk is true when a streaming caller asked for the final usage chunk.
	WantUsageChunk bool `json:"want_usage_chunk,omitempty"`
	// Async jobs have a row in Postgres before they are published.
	Async bool `json:"async,omitempty"`
	// HoldsSlot is true when the job took one of its key's max_concurrency slots.
	HoldsSlot bool      `json:"holds_slot,omitempty"`
	CreatedAt time.Time `json:"created_at"`
	Deadline  time.Time `json:"deadline"`
	// Reply is the subject the answer goes to; empty for async jobs.
	Reply string `json:"reply,omitempty"`
}

// Encode returns the job's wire form. HTML characters in the body are left as they are:
// escaping them would make a body of code or markup up to six times larger.
func (j *Job) Encode() ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(j); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(b.Bytes(), []byte("\n")), nil
}

// ErrBadJob means a message is not a job this version can run.
var ErrBadJob = errors.New("malformed job")

// Decode parses a job message. It returns an error wrapping ErrBadJob if the message is not
// valid JSON or lacks an id, key, endpoint or deadline.
func Decode(data []byte) (*Job, error) {
	var j Job
	if err := json.Unmarshal(data, &j); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadJob, err)
	}
	if j.ID == "" || j.KeyID == "" || j.Endpoint == "" || j.Deadline.IsZero() {
		return nil, fmt.Errorf("%w: missing id, key, endpoint or deadline", ErrBadJob)
	}
	return &j, nil
}

// APIError is the error object of ../shared/API.md, plus the HTTP status it goes with.
type APIError struct {
	Status  int    `json:"status_code"`
	Message string `json:"message"`
	Type    string `json:"type"`
	Param   string `json:"param,omitempty"`
	Code    string `json:"code,omitempty"`
	// RetryAfter, in seconds, is sent as a Retry-After header when set.
	RetryAfter int `json:"retry_after,omitempty"`
}

// Error returns the message.
func (e *APIError) Error() string { return e.Message }

// Final is the last reply message of a job attempt.
type Final struct {
	JobID  string `json:"job_id"`
	Status string `json:"status"` // succeeded, failed or canceled
	// StatusCode is the HTTP status for the caller: the upstream's on success.
	StatusCode int       `json:"status_code"`
	Error      *APIError `json:"error,omitempty"`
	Usage      *Usage    `json:"usage,omitempty"`
	CostUSD    float64   `json:"cost_usd"`
	// Parts is how many sequenced parts preceded this message in this attempt.
	Parts int `json:"parts"`
}

// Usage is a job's token count.
type Usage struct {
	PromptTokens     int64 `json:"prompt_tokens"`
	CompletionTokens int64 `json:"completion_tokens"`
	TotalTokens      int64 `json:"total_tokens"`
}
