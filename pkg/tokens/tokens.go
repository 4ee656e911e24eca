// Package tokens holds the one token-usage type that crosses Sluice's package boundaries:
// what an upstream reported (pkg/providers), what a job is charged for (pkg/store) and what
// a caller is shown (pkg/jobs replies, the job object). It imports nothing of Sluice's.
package tokens

import "encoding/json"

// Usage is the token count of one upstream call or job.
type Usage struct {
	PromptTokens     int64 `json:"prompt_tokens"`
	CompletionTokens int64 `json:"completion_tokens"`
	// Estimated is true when the upstream reported no usage and Sluice counted it itself
	// (a quarter of the request's bytes for the prompt, one token per streamed chunk).
	Estimated bool `json:"-"`
}

// Total is PromptTokens + CompletionTokens.
func (u Usage) Total() int64 { return u.PromptTokens + u.CompletionTokens }

// MarshalJSON writes the OpenAI usage object: prompt, completion and total tokens.
func (u Usage) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		PromptTokens     int64 `json:"prompt_tokens"`
		CompletionTokens int64 `json:"completion_tokens"`
		TotalTokens      int64 `json:"total_tokens"`
	}{u.PromptTokens, u.CompletionTokens, u.Total()})
}

// Estimate is the estimated usage of a call that reported none: a quarter of the request's
// bytes for the prompt and one token per streamed chunk, marked Estimated.
func Estimate(requestBytes, chunks int) *Usage {
	return &Usage{PromptTokens: int64((requestBytes + 3) / 4), CompletionTokens: int64(chunks), Estimated: true}
}

// Admission is the tokens a request of requestBytes is counted for when it is admitted
// against a tokens-per-minute limit: the prompt estimate of Estimate. Settlement replaces it
// with the usage the upstream reported.
func Admission(requestBytes int) int64 { return int64((requestBytes + 3) / 4) }
