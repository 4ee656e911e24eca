package providers_test

import (
	"encoding/json"
	"testing"

	"github.com/sluicehq/sluice/pkg/providers"
	"github.com/sluicehq/sluice/pkg/tokens"
)

// TestFakeStreamShapes checks that the fake model streams each endpoint in its own OpenAI
// shape: chat as chat.completion.chunk deltas after a role chunk, completions as
// text_completion events holding the text (issue 9 item 16); both with finish_reason on the
// last piece, the usage chunk only when asked for, and no [DONE] (Sluice writes it). The
// pieces add up to the non-stream answer.
func TestFakeStreamShapes(t *testing.T) {
	t.Parallel()
	f, err := providers.NewFake("")
	if err != nil {
		t.Fatal(err)
	}
	type choice struct {
		Index        *int               `json:"index"`
		Text         *string            `json:"text"`
		Delta        *map[string]string `json:"delta"`
		Message      *map[string]string `json:"message"`
		Logprobs     json.RawMessage    `json:"logprobs"`
		FinishReason *string            `json:"finish_reason"`
	}
	type chunk struct {
		ID      string        `json:"id"`
		Object  string        `json:"object"`
		Created int64         `json:"created"`
		Model   string        `json:"model"`
		Choices []choice      `json:"choices"`
		Usage   *tokens.Usage `json:"usage"`
	}
	tests := []struct {
		endpoint, body string
		usageChunk     bool
	}{
		{"/v1/completions", `{"model":"fake","prompt":"say three words","stream":true}`, false},
		{"/v1/completions", `{"model":"fake","prompt":"say three words","stream":true}`, true},
		{"/v1/chat/completions", `{"model":"fake","messages":[{"role":"user","content":"say three words"}],"stream":true}`, false},
		{"/v1/chat/completions", `{"model":"fake","messages":[{"role":"user","content":"say three words"}],"stream":true}`, true},
	}
	for _, tt := range tests {
		name := tt.endpoint
		if tt.usageChunk {
			name += " with usage chunk"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			legacy := tt.endpoint == "/v1/completions"
			whole, err := f.Do(t.Context(), &providers.Request{Endpoint: tt.endpoint, Body: []byte(tt.body)}, nil)
			if err != nil {
				t.Fatal(err)
			}
			var w chunk
			if err := json.Unmarshal(whole.Body, &w); err != nil || len(w.Choices) != 1 {
				t.Fatalf("whole answer %s: %v", whole.Body, err)
			}
			want := deref(w.Choices[0].Text)
			if !legacy {
				want = (*w.Choices[0].Message)["content"]
			}

			var evs events
			res, err := f.Do(t.Context(), &providers.Request{Endpoint: tt.endpoint, Body: []byte(tt.body), Stream: true,
				WantUsageChunk: tt.usageChunk}, evs.emit)
			if err != nil {
				t.Fatal(err)
			}
			if res.Usage == nil || *res.Usage != *whole.Usage {
				t.Errorf("stream Result.Usage = %v, want %v", res.Usage, whole.Usage)
			}
			wantObject, wantID := "chat.completion.chunk", "chatcmpl-fake"
			if legacy {
				wantObject, wantID = "text_completion", "cmpl-fake"
			}
			var text string
			finished, usageChunk := false, false
			for i, ev := range evs {
				var c chunk
				if ev.Name != "" || json.Unmarshal(ev.Data, &c) != nil {
					t.Fatalf("event %d is not a JSON chunk: %q %s", i, ev.Name, ev.Data)
				}
				if c.Object != wantObject || c.ID != wantID || c.Model != "fake" || c.Created == 0 {
					t.Errorf("event %d = %s, want object %q, id %q, model and created", i, ev.Data, wantObject, wantID)
				}
				if usageChunk {
					t.Errorf("event %d follows the usage chunk: %s", i, ev.Data)
				}
				if c.Usage != nil {
					usageChunk = true
					if len(c.Choices) != 0 || *c.Usage != *whole.Usage {
						t.Errorf("usage chunk %s, want no choices and usage %v", ev.Data, *whole.Usage)
					}
					continue
				}
				if len(c.Choices) != 1 || c.Choices[0].Index == nil || *c.Choices[0].Index != 0 {
					t.Fatalf("event %d has no choice 0: %s", i, ev.Data)
				}
				ch := c.Choices[0]
				if finished {
					t.Errorf("event %d follows the finish: %s", i, ev.Data)
				}
				finished = ch.FinishReason != nil
				if finished && *ch.FinishReason != "stop" {
					t.Errorf("finish_reason = %q, want stop", *ch.FinishReason)
				}
				switch {
				case legacy && (ch.Delta != nil || ch.Text == nil || string(ch.Logprobs) != "null"):
					t.Errorf("completions event %d = %s, want choices[0].text and logprobs null, no delta", i, ev.Data)
				case legacy:
					text += *ch.Text
				case ch.Text != nil || ch.Delta == nil:
					t.Errorf("chat event %d = %s, want choices[0].delta, no text", i, ev.Data)
				case i == 0 && (*ch.Delta)["role"] != "assistant":
					t.Errorf("first chat event = %s, want the assistant role", ev.Data)
				default:
					text += (*ch.Delta)["content"]
				}
			}
			if !finished || text != want {
				t.Errorf("stream text = %q (finished %v), want %q with a finish_reason", text, finished, want)
			}
			if usageChunk != tt.usageChunk {
				t.Errorf("usage chunk sent = %v, want %v", usageChunk, tt.usageChunk)
			}
		})
	}
}

func deref[T any](p *T) T {
	if p == nil {
		var zero T
		return zero
	}
	return *p
}
