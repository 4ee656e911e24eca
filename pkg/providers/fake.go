package providers

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/sluicehq/sluice/pkg/tokens"
)

// Fake is a built-in deterministic model for demos, `make run`, tests and benchmarks. It
// answers chat completions, completions, embeddings, Messages and Responses calls without
// any network (the last two through the same translations from chat completions that the
// real adapters use): the answer echoes the last user message, and usage is counted from
// the input, so the same request always gets the same answer and the same bill.
//
// Token rule: prompt_tokens = words in every message (or the prompt) + 3 per message;
// completion_tokens = words in the answer. An embedding input costs its words (or its
// token ids).
type Fake struct {
	latency time.Duration // before the answer (non-stream) or the first chunk (stream)
	perTok  time.Duration // between stream chunks
}

// NewFake returns a fake model configured by a base URL such as
// "fake://?latency=20ms&token_latency=5ms" (both optional, default 0).
func NewFake(baseURL string) (*Fake, error) {
	f := &Fake{}
	if baseURL == "" {
		return f, nil
	}
	u, err := url.Parse(baseURL)
	if err != nil {
		return nil, fmt.Errorf("fake base URL: %w", err)
	}
	for name, dst := range map[string]*time.Duration{"latency": &f.latency, "token_latency": &f.perTok} {
		if v := u.Query().Get(name); v != "" {
			if *dst, err = time.ParseDuration(v); err != nil {
				return nil, fmt.Errorf("fake base URL %s: %w", name, err)
			}
		}
	}
	return f, nil
}

type fakeRequest struct {
	Model    string `json:"model"`
	Messages []struct {
		Role    string          `json:"role"`
		Content json.RawMessage `json:"content"`
	} `json:"messages"`
	Prompt json.RawMessage `json:"prompt"`
}

const fakeName = "fake"

// Do implements Provider.
func (f *Fake) Do(ctx context.Context, req *Request, emit func(Event) error) (*Result, error) {
	switch req.Endpoint {
	case "/v1/messages":
		return messagesViaChat(ctx, fakeName, false, f.Do, req, emit)
	case endpointResponses:
		return responsesViaChat(ctx, fakeName, false, DefaultMaxRecapBytes, f.Do, req, emit)
	case "/v1/embeddings":
		return f.embeddings(ctx, req)
	}
	var in fakeRequest
	if err := json.Unmarshal(req.Body, &in); err != nil {
		return nil, &Error{Provider: "fake", StatusCode: http.StatusBadRequest, Type: "invalid_request_error", Message: "body is not valid JSON"}
	}
	if req.Endpoint != "/v1/chat/completions" && req.Endpoint != "/v1/completions" {
		return nil, &Error{Provider: "fake", StatusCode: http.StatusNotFound, Type: "invalid_request_error",
			Message: "the fake model does not serve " + req.Endpoint}
	}
	answer, usage := fakeAnswer(&in)
	if err := sleep(ctx, f.latency); err != nil {
		return nil, &Error{Provider: "fake", Err: err}
	}
	legacy := req.Endpoint == "/v1/completions"
	id, object := "chatcmpl-fake", "chat.completion"
	switch {
	case legacy: // whole or streamed, a completion is a text_completion
		id, object = "cmpl-fake", "text_completion"
	case req.Stream:
		object = "chat.completion.chunk"
	}
	created := time.Now().Unix()
	body := func(choices []any) map[string]any {
		return map[string]any{"id": id, "object": object, "created": created, "model": in.Model, "choices": choices}
	}
	if !req.Stream {
		choice := map[string]any{"index": 0, "finish_reason": "stop",
			"message": map[string]any{"role": "assistant", "content": answer}}
		if legacy {
			choice = map[string]any{"index": 0, "text": answer, "finish_reason": "stop", "logprobs": nil}
		}
		v := body([]any{choice})
		v["usage"] = usageJSON(usage)
		b, _ := json.Marshal(v)
		return &Result{StatusCode: http.StatusOK, Body: b, Usage: &usage}, nil
	}

	// A chat stream is chat.completion.chunk events: the role, then the answer in content
	// deltas. A completions stream, as OpenAI sends it, is text_completion events holding
	// the text itself, with no role. Both put finish_reason on the last piece and end with
	// the usage chunk if it was asked for; Sluice writes the data: [DONE].
	res := &Result{StatusCode: http.StatusOK}
	send := func(v map[string]any) error {
		b, _ := json.Marshal(v)
		if err := emit(Event{Data: b}); err != nil {
			return &Error{Provider: "fake", Err: err}
		}
		return nil
	}
	piece := func(text string, finish any) map[string]any {
		if legacy {
			return body([]any{map[string]any{"index": 0, "text": text, "logprobs": nil, "finish_reason": finish}})
		}
		return body([]any{map[string]any{"index": 0, "delta": map[string]any{"content": text}, "finish_reason": finish}})
	}
	if !legacy {
		role := map[string]any{"index": 0, "delta": map[string]any{"role": "assistant", "content": ""}, "finish_reason": nil}
		if err := send(body([]any{role})); err != nil {
			return res, err
		}
	}
	words := strings.SplitAfter(answer, " ")
	for i, w := range words {
		if i > 0 {
			if err := sleep(ctx, f.perTok); err != nil {
				return res, &Error{Provider: "fake", Err: err}
			}
		}
		var finish any
		if i == len(words)-1 {
			finish = "stop"
		}
		if err := send(piece(w, finish)); err != nil {
			return res, err
		}
	}
	res.Usage = &usage
	if req.WantUsageChunk {
		v := body([]any{})
		v["usage"] = usageJSON(usage)
		if err := send(v); err != nil {
			return res, err
		}
	}
	return res, nil
}

func usageJSON(u tokens.Usage) map[string]int64 {
	return map[string]int64{"prompt_tokens": u.PromptTokens, "completion_tokens": u.CompletionTokens,
		"total_tokens": u.PromptTokens + u.CompletionTokens}
}

// fakeAnswer computes the deterministic answer and its usage.
func fakeAnswer(in *fakeRequest) (string, tokens.Usage) {
	var prompt int64
	last := ""
	for _, m := range in.Messages {
		text := contentText(m.Content)
		prompt += int64(len(strings.Fields(text))) + 3
		if m.Role == "user" {
			last = text
		}
	}
	if len(in.Prompt) > 0 {
		last = contentText(in.Prompt)
		prompt += int64(len(strings.Fields(last)))
	}
	words := strings.Fields(last)
	if len(words) > 64 {
		words = words[:64]
	}
	answer := "Hello from Sluice's fake model."
	if len(words) > 0 {
		answer += " You said: " + strings.Join(words, " ")
	}
	return answer, tokens.Usage{PromptTokens: prompt, CompletionTokens: int64(len(strings.Fields(answer)))}
}

// contentText flattens a message content: a string, or an array of parts with "text".
func contentText(raw json.RawMessage) string {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	var parts []struct {
		Text string `json:"text"`
	}
	if json.Unmarshal(raw, &parts) == nil {
		texts := make([]string, 0, len(parts))
		for _, p := range parts {
			texts = append(texts, p.Text)
		}
		return strings.Join(texts, " ")
	}
	return ""
}

// sleep waits d or until ctx is done, returning its cause.
func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}
