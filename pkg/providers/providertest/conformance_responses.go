package providertest

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/sluicehq/sluice/pkg/providers"
	"github.com/sluicehq/sluice/pkg/tokens"
)

// The conformance suite in the Responses API (EndpointResponses): the request it sends,
// and how it reads a response object or a stream of Responses events, checking their
// shape and order on the way.

// responsesBody is the Responses request for c: the suite's conversation as instructions
// and one user message.
func responsesBody(model string, c call) map[string]any {
	body := map[string]any{"model": model, "instructions": systemText,
		"input": []map[string]any{{"role": "user", "content": []map[string]any{{"type": "input_text", "text": userText}}}}}
	if c.maxTokens > 0 {
		body["max_output_tokens"] = c.maxTokens
	}
	return body
}

// responseObject is the part of a response object the suite reads.
type responseObject struct {
	ID     string `json:"id"`
	Object string `json:"object"`
	Status string `json:"status"`
	Output []struct {
		Type    string `json:"type"`
		ID      string `json:"id"`
		Status  string `json:"status"`
		Role    string `json:"role"`
		Content []struct {
			Type string `json:"type"`
			Text string `json:"text"`
		} `json:"content"`
	} `json:"output"`
	Usage *struct {
		InputTokens  int64 `json:"input_tokens"`
		OutputTokens int64 `json:"output_tokens"`
		TotalTokens  int64 `json:"total_tokens"`
	} `json:"usage"`
}

// read checks the object's shape and returns its text, status and usage.
func (r *responseObject) read(t *testing.T, raw []byte) answer {
	t.Helper()
	if r.Object != "response" || !strings.HasPrefix(r.ID, "resp_") {
		t.Fatalf("not a response object with a resp_ id: %.300s", raw)
	}
	a := answer{finish: r.Status, complete: r.Status == "completed" || r.Status == "incomplete"}
	for _, it := range r.Output {
		if it.Type != "message" {
			continue
		}
		if it.Role != "assistant" || it.Status != "completed" {
			t.Errorf("output message with role %q and status %q, want a completed assistant message", it.Role, it.Status)
		}
		for _, c := range it.Content {
			if c.Type == "output_text" {
				a.text += c.Text
			}
		}
	}
	if u := r.Usage; u != nil {
		a.usage = &tokens.Usage{PromptTokens: u.InputTokens, CompletionTokens: u.OutputTokens}
		if u.TotalTokens != u.InputTokens+u.OutputTokens {
			t.Errorf("usage total_tokens = %d, want %d", u.TotalTokens, u.InputTokens+u.OutputTokens)
		}
	}
	return a
}

func parseResponsesBody(t *testing.T, b []byte) answer {
	t.Helper()
	var r responseObject
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatalf("answer is not a response object: %.300s (%v)", b, err)
	}
	return r.read(t, b)
}

// parseResponsesStream reads a Responses stream: named events numbered from 0, beginning
// with response.created and response.in_progress; each output item added, filled and done
// in order (a message through its content part's text deltas, whose done events repeat
// the text); and nothing after the terminal response.completed or response.incomplete,
// whose response carries the status and usage. response.failed is never emitted by an
// adapter: a failed stream just ends, and the ingress writes it.
func parseResponsesStream(t *testing.T, events []providers.Event) answer {
	t.Helper()
	var a answer
	open := -1   // the open output item
	next := 0    // the output_index the next item must have
	openID := "" // its id
	var text strings.Builder
	for i, ev := range events {
		var e struct {
			Type           string          `json:"type"`
			SequenceNumber *int            `json:"sequence_number"`
			Response       json.RawMessage `json:"response"`
			OutputIndex    *int            `json:"output_index"`
			ItemID         string          `json:"item_id"`
			Item           *struct {
				ID   string `json:"id"`
				Type string `json:"type"`
			} `json:"item"`
			Delta string `json:"delta"`
			Text  string `json:"text"`
		}
		if err := json.Unmarshal(ev.Data, &e); err != nil || e.Type == "" {
			t.Fatalf("Responses event %d is not an event: %.300s (%v)", i, ev.Data, err)
		}
		if ev.Name != e.Type {
			t.Errorf("Responses event %d is named %q but has type %q", i, ev.Name, e.Type)
		}
		if e.SequenceNumber == nil || *e.SequenceNumber != i {
			t.Errorf("Responses event %d (%s) has sequence_number %v, want %d", i, e.Type, e.SequenceNumber, i)
		}
		if a.complete {
			t.Errorf("Responses event %d (%s) follows the terminal event", i, e.Type)
		}
		want := map[int]string{0: "response.created", 1: "response.in_progress"}[i]
		if (want != "" && e.Type != want) || (i > 1 && (e.Type == "response.created" || e.Type == "response.in_progress")) {
			t.Fatalf("Responses event %d is %s; a stream begins with one response.created and one response.in_progress", i, e.Type)
		}
		switch e.Type {
		case "response.output_item.added":
			if open >= 0 || e.OutputIndex == nil || *e.OutputIndex != next || e.Item == nil || e.Item.ID == "" {
				t.Errorf("output_item.added %v while item %d is open or out of order (want %d): %.300s", e.OutputIndex, open, next, ev.Data)
				continue
			}
			open, openID, next = next, e.Item.ID, next+1
			text.Reset()
		case "response.content_part.added", "response.output_text.delta", "response.output_text.done",
			"response.content_part.done", "response.function_call_arguments.delta", "response.function_call_arguments.done":
			if e.OutputIndex == nil || *e.OutputIndex != open || e.ItemID != openID {
				t.Errorf("%s for item %v (%q) while item %d (%q) is open", e.Type, e.OutputIndex, e.ItemID, open, openID)
			}
			switch e.Type {
			case "response.output_text.delta":
				text.WriteString(e.Delta)
				a.text += e.Delta
			case "response.output_text.done":
				if e.Text != text.String() {
					t.Errorf("output_text.done text = %q, want the deltas' %q", e.Text, text.String())
				}
			}
		case "response.output_item.done":
			if e.OutputIndex == nil || *e.OutputIndex != open || e.Item == nil || e.Item.ID != openID {
				t.Errorf("output_item.done for item %v while item %d is open", e.OutputIndex, open)
			}
			open = -1
		case "response.completed", "response.incomplete":
			if open >= 0 {
				t.Errorf("%s while item %d is open", e.Type, open)
			}
			var r responseObject
			if err := json.Unmarshal(e.Response, &r); err != nil {
				t.Fatalf("%s without a response: %.300s", e.Type, ev.Data)
			}
			final := r.read(t, e.Response)
			if final.text != a.text {
				t.Errorf("%s output text = %q, want the deltas' %q", e.Type, final.text, a.text)
			}
			if want := strings.TrimPrefix(e.Type, "response."); final.finish != want {
				t.Errorf("%s has status %q", e.Type, final.finish)
			}
			a.finish, a.usage, a.complete = final.finish, final.usage, true
		case "response.failed", "error":
			t.Errorf("Responses event %d is %s; an adapter ends a failed stream with an error, not an event", i, e.Type)
		}
	}
	return a
}
