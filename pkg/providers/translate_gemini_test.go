package providers

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/sluicehq/sluice/pkg/tokens"
)

func TestGeminiFromChat(t *testing.T) {
	t.Parallel()
	sig := base64.StdEncoding.EncodeToString([]byte("\xfb\xff\xbfsignature")) // has '+' and '/'
	id := callID("call_a", sig)
	tests := []struct {
		name      string
		chat      string
		wantModel string
		want      string
	}{
		{
			name: "system, text, image, generation config",
			chat: `{"model":"models/gemini-2.5-flash","max_completion_tokens":64,"temperature":0.1,"top_p":0.5,"stop":"END",
				"messages":[{"role":"system","content":"Be brief."},{"role":"developer","content":""},{"role":"user","content":[{"type":"text","text":"what?"},{"type":"text","text":""},
					{"type":"image_url","image_url":{"url":"data:image/png;base64,iVBORw0KGgo="}},
					{"type":"image_url","image_url":{"url":"https://example.com/a/cat.webp?size=2"}}]},
				{"role":"assistant","content":"A cat."},{"role":"user","content":"sure?"}]}`,
			wantModel: "gemini-2.5-flash",
			want: `{"systemInstruction":{"parts":[{"text":"Be brief."}]},
				"contents":[{"role":"user","parts":[{"text":"what?"},{"inlineData":{"mimeType":"image/png","data":"iVBORw0KGgo="}},
					{"fileData":{"mimeType":"image/webp","fileUri":"https://example.com/a/cat.webp?size=2"}}]},
				{"role":"model","parts":[{"text":"A cat."}]},{"role":"user","parts":[{"text":"sure?"}]}],
				"generationConfig":{"maxOutputTokens":64,"temperature":0.1,"topP":0.5,"stopSequences":["END"]}}`,
		},
		{
			name: "tool calls with a thought signature, and their results",
			chat: `{"model":"gemini-3-pro","messages":[{"role":"user","content":"weather in Paris and Rome?"},
				{"role":"assistant","content":null,"tool_calls":[
					{"id":"` + id + `","type":"function","function":{"name":"weather","arguments":"{\"city\":\"Paris\"}"}},
					{"id":"call_b","type":"function","function":{"name":"weather","arguments":"{\"city\":\"Rome\"}"}}]},
				{"role":"tool","tool_call_id":"` + id + `","content":"{\"temp\":21}"},
				{"role":"tool","tool_call_id":"call_b","content":"rain"}],
				"tools":[{"type":"function","function":{"name":"weather","description":"Now","parameters":{"type":"object","additionalProperties":false}}},
					{"type":"function","function":{"name":"noargs"}}],
				"tool_choice":{"type":"function","function":{"name":"weather"}}}`,
			wantModel: "gemini-3-pro",
			want: `{"contents":[{"role":"user","parts":[{"text":"weather in Paris and Rome?"}]},
				{"role":"model","parts":[{"thoughtSignature":"` + sig + `","functionCall":{"name":"weather","args":{"city":"Paris"}}},
					{"functionCall":{"name":"weather","args":{"city":"Rome"}}}]},
				{"role":"user","parts":[{"functionResponse":{"name":"weather","response":{"temp":21}}},
					{"functionResponse":{"name":"weather","response":{"content":"rain"}}}]}],
				"tools":[{"functionDeclarations":[{"name":"weather","description":"Now","parametersJsonSchema":{"type":"object","additionalProperties":false}},
					{"name":"noargs"}]}],
				"toolConfig":{"functionCallingConfig":{"mode":"ANY","allowedFunctionNames":["weather"]}}}`,
		},
		{
			name:      "tool choice none",
			chat:      `{"model":"g","messages":[{"role":"user","content":"hi"}],"tool_choice":"none","tools":[{"type":"function","function":{"name":"f"}}]}`,
			wantModel: "g",
			want: `{"contents":[{"role":"user","parts":[{"text":"hi"}]}],"tools":[{"functionDeclarations":[{"name":"f"}]}],
				"toolConfig":{"functionCallingConfig":{"mode":"NONE"}}}`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, model, err := geminiFromChat("gemini", []byte(tt.chat))
			if err != nil {
				t.Fatalf("geminiFromChat: %v", err)
			}
			if model != tt.wantModel {
				t.Errorf("model = %q, want %q", model, tt.wantModel)
			}
			sameJSON(t, "Gemini request", got, tt.want)
		})
	}
}

func TestGeminiFromChatRejects(t *testing.T) {
	t.Parallel()
	tests := []struct{ name, chat, part string }{
		{"no model", `{"messages":[{"role":"user","content":"hi"}]}`, "model is required"},
		{"n > 1", `{"model":"g","n":3,"messages":[{"role":"user","content":"secret prompt"}]}`, "n greater than 1"},
		{"unknown tool result", `{"model":"g","messages":[{"role":"user","content":"hi"},{"role":"tool","tool_call_id":"x","content":"secret prompt"}]}`, "tool_call_id"},
		{"audio", `{"model":"g","messages":[{"role":"user","content":[{"type":"input_audio"}]}]}`, `"input_audio"`},
		{"bad arguments", `{"model":"g","messages":[{"role":"assistant","tool_calls":[{"id":"c","function":{"name":"f","arguments":"secret prompt"}}]}]}`, "arguments"},
		{"no messages", `{"model":"g","messages":[]}`, "at least one"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, _, err := geminiFromChat("gemini", []byte(tt.chat))
			wantInvalid(t, err, tt.part)
		})
	}
}

func TestCallIDSignature(t *testing.T) {
	t.Parallel()
	for _, sig := range []string{"", "c2ln", "+/8=", "c2lnbmF0dXJlLzEyMysr", "not base64!"} {
		id := callID("call_1", sig)
		if strings.ContainsAny(id, "+/=") {
			t.Errorf("callID(%q) = %q, which is not URL-safe", sig, id)
		}
		want := sig
		if sig == "not base64!" {
			want = "" // dropped rather than corrupted
		}
		if got := signatureFromCallID(id); got != want {
			t.Errorf("signatureFromCallID(callID(%q)) = %q, want %q", sig, got, want)
		}
	}
}

func TestChatFromGemini(t *testing.T) {
	t.Parallel()
	ids := func() string { return "call_x" }
	tests := []struct {
		name   string
		answer string
		want   string
	}{
		{
			name: "text, thoughts dropped, usage with thinking and cache",
			answer: `{"candidates":[{"content":{"role":"model","parts":[{"text":"thinking...","thought":true},{"text":"Hello"},{"text":" there."}]},
				"finishReason":"STOP","index":0}],"modelVersion":"gemini-2.5-flash","responseId":"r1",
				"usageMetadata":{"promptTokenCount":12,"candidatesTokenCount":3,"thoughtsTokenCount":20,"cachedContentTokenCount":4,"totalTokenCount":35}}`,
			want: `{"id":"chatcmpl-r1","object":"chat.completion","created":9,"model":"gemini-2.5-flash",
				"choices":[{"index":0,"message":{"role":"assistant","content":"Hello there."},"finish_reason":"stop"}],
				"usage":{"prompt_tokens":12,"completion_tokens":23,"total_tokens":35,"prompt_tokens_details":{"cached_tokens":4}}}`,
		},
		{
			name: "function calls finish with tool_calls and carry the signature",
			answer: `{"candidates":[{"content":{"role":"model","parts":[
				{"functionCall":{"name":"weather","args":{"city":"Paris"}},"thoughtSignature":"c2ln"},
				{"functionCall":{"id":"fc_2","name":"now"}}]},"finishReason":"STOP"}],"responseId":"r2"}`,
			want: `{"id":"chatcmpl-r2","object":"chat.completion","created":9,"model":"g",
				"choices":[{"index":0,"message":{"role":"assistant","content":null,"tool_calls":[
					{"id":"call_x` + sigMark + `c2ln","type":"function","function":{"name":"weather","arguments":"{\"city\":\"Paris\"}"}},
					{"id":"fc_2","type":"function","function":{"name":"now","arguments":"{}"}}]},"finish_reason":"tool_calls"}]}`,
		},
		{
			name:   "max tokens",
			answer: `{"candidates":[{"content":{"role":"model","parts":[{"text":"Hel"}]},"finishReason":"MAX_TOKENS"}],"responseId":"r3"}`,
			want: `{"id":"chatcmpl-r3","object":"chat.completion","created":9,"model":"g",
				"choices":[{"index":0,"message":{"role":"assistant","content":"Hel"},"finish_reason":"length"}]}`,
		},
		{
			name:   "safety",
			answer: `{"candidates":[{"content":{"role":"model","parts":[]},"finishReason":"SAFETY"}],"responseId":"r4"}`,
			want: `{"id":"chatcmpl-r4","object":"chat.completion","created":9,"model":"g",
				"choices":[{"index":0,"message":{"role":"assistant","content":""},"finish_reason":"content_filter"}]}`,
		},
		{
			name:   "blocked prompt",
			answer: `{"promptFeedback":{"blockReason":"SAFETY"},"responseId":"r5","usageMetadata":{"promptTokenCount":5}}`,
			want: `{"id":"chatcmpl-r5","object":"chat.completion","created":9,"model":"g",
				"choices":[{"index":0,"message":{"role":"assistant","content":""},"finish_reason":"content_filter"}],
				"usage":{"prompt_tokens":5,"completion_tokens":0,"total_tokens":5}}`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var r geminiResponse
			if err := json.Unmarshal([]byte(tt.answer), &r); err != nil {
				t.Fatal(err)
			}
			got, err := chatFromGemini("gemini", &r, "g", 9, ids)
			if err != nil {
				t.Fatal(err)
			}
			sameJSON(t, "chat completion", got, tt.want)
		})
	}
	t.Run("no candidates and no reason", func(t *testing.T) {
		t.Parallel()
		if _, err := chatFromGemini("gemini", &geminiResponse{}, "g", 0, ids); !errors.Is(err, ErrBadResponse) {
			t.Errorf("error = %v, want ErrBadResponse", err)
		}
	})
}

// TestChunksFromGemini checks that a stream joins to the same answer as the whole one.
func TestChunksFromGemini(t *testing.T) {
	t.Parallel()
	stream := []string{
		`{"candidates":[{"content":{"role":"model","parts":[{"text":"pondering","thought":true}]}}],"responseId":"r","modelVersion":"gemini-2.5-pro","usageMetadata":{"promptTokenCount":12}}`,
		`{"candidates":[{"content":{"role":"model","parts":[{"text":"Let me "}]}}],"responseId":"r","modelVersion":"gemini-2.5-pro","usageMetadata":{"promptTokenCount":12}}`,
		`{"candidates":[{"content":{"role":"model","parts":[{"text":"check."},{"functionCall":{"name":"weather","args":{"city":"Paris"}},"thoughtSignature":"c2ln"}]},"finishReason":"STOP"}],
			"responseId":"r","modelVersion":"gemini-2.5-pro","usageMetadata":{"promptTokenCount":12,"candidatesTokenCount":8,"thoughtsTokenCount":4}}`,
	}
	whole := `{"candidates":[{"content":{"role":"model","parts":[{"text":"Let me check."},
		{"functionCall":{"name":"weather","args":{"city":"Paris"}},"thoughtSignature":"c2ln"}]},"finishReason":"STOP"}],
		"responseId":"r","modelVersion":"gemini-2.5-pro","usageMetadata":{"promptTokenCount":12,"candidatesTokenCount":8,"thoughtsTokenCount":4}}`
	ids := func() string { return "call_x" }
	tr := &chunksFromGemini{provider: "gemini", model: "g", created: 3, wantUsage: true, newCallID: ids}
	var chunks [][]byte
	for i, ev := range stream {
		out, err := tr.event([]byte(ev))
		if err != nil {
			t.Fatalf("event %d: %v", i, err)
		}
		chunks = append(chunks, out...)
	}
	end, err := tr.end()
	if err != nil {
		t.Fatal(err)
	}
	got := accumulateChat(t, append(chunks, end...))
	var r geminiResponse
	if err := json.Unmarshal([]byte(whole), &r); err != nil {
		t.Fatal(err)
	}
	c, err := chatFromGemini("gemini", &r, "g", 3, ids)
	if err != nil {
		t.Fatal(err)
	}
	sameJSON(t, "joined stream", got, string(mustMarshal(chatAccumulationOf(c))))
	if u := tr.usage.total(); u == nil || *u != (tokens.Usage{PromptTokens: 12, CompletionTokens: 12}) {
		t.Errorf("usage = %+v, want 12 prompt, 12 completion", u)
	}

	t.Run("clean end without a finish reason", func(t *testing.T) {
		t.Parallel()
		tr := &chunksFromGemini{provider: "gemini", newCallID: ids}
		if _, err := tr.event([]byte(stream[1])); err != nil {
			t.Fatal(err)
		}
		if _, err := tr.end(); !errors.Is(err, ErrTruncated) {
			t.Errorf("end() error = %v, want ErrTruncated", err)
		}
	})
	t.Run("error event", func(t *testing.T) {
		t.Parallel()
		tr := &chunksFromGemini{provider: "gemini", newCallID: ids}
		_, err := tr.event([]byte(`{"error":{"code":503,"message":"The model is overloaded.","status":"UNAVAILABLE"}}`))
		if e, ok := errors.AsType[*Error](err); !ok || e.StatusCode != 503 || !e.Retryable() {
			t.Errorf("error = %v, want a retryable 503", err)
		}
	})
}
