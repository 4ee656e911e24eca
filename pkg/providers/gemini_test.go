package providers_test

import (
	"encoding/json"
	"errors"
	"net/http"
	"reflect"
	"testing"
	"time"

	"github.com/sluicehq/sluice/pkg/providers"
	"github.com/sluicehq/sluice/pkg/tokens"
)

func TestGeminiRequest(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		base      string // appended to the stub's URL
		model     string
		stream    bool
		wantPath  string
		wantQuery string
	}{
		{"generate", "/v1beta", "gemini-2.5-flash", false, "/v1beta/models/gemini-2.5-flash:generateContent", ""},
		{"stream", "/v1beta/", "gemini-2.5-flash", true, "/v1beta/models/gemini-2.5-flash:streamGenerateContent", "alt=sse"},
		{"no version in the base URL", "", "models/gemini-2.5-pro", false, "/v1beta/models/gemini-2.5-pro:generateContent", ""},
		{"other version", "/v1", "gemini-2.5-pro", false, "/v1/models/gemini-2.5-pro:generateContent", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			up := newStub(t, reply{status: http.StatusBadRequest,
				body: `{"error":{"code":400,"message":"API key not valid. Please pass a valid API key.","status":"INVALID_ARGUMENT"}}`})
			p := providers.NewGemini(up.srv.Client(), up.srv.URL+tt.base, testKey, providers.Limits{})
			_, err := p.Do(t.Context(), &providers.Request{Endpoint: "/v1/chat/completions", Stream: tt.stream,
				Body: []byte(`{"model":"` + tt.model + `","messages":[{"role":"user","content":"hi"}]}`)}, new(events).emit)
			if e, ok := errors.AsType[*providers.Error](err); !ok || e.StatusCode != 400 || e.Retryable() ||
				e.Message != "API key not valid. Please pass a valid API key." {
				t.Errorf("Do error = %v, want the upstream's 400", err)
			}
			got := up.only(t)
			if got.Method != http.MethodPost || got.Path != tt.wantPath || got.Query != tt.wantQuery {
				t.Errorf("request = %s %s?%s, want POST %s?%s", got.Method, got.Path, got.Query, tt.wantPath, tt.wantQuery)
			}
			if got.Header.Get("X-Goog-Api-Key") != testKey.Reveal() || got.Header.Get("Authorization") != "" {
				t.Errorf("key headers = %v, want only x-goog-api-key", got.Header)
			}
			jsonEqual(t, "upstream body", got.Body, `{"contents":[{"role":"user","parts":[{"text":"hi"}]}]}`)
		})
	}
}

func TestGeminiErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		status    int
		header    map[string]string
		body      string
		retry     time.Duration
		retryable bool
	}{
		{"quota with retry info", 429, nil, `{"error":{"code":429,"message":"Quota exceeded","status":"RESOURCE_EXHAUSTED",
			"details":[{"@type":"type.googleapis.com/google.rpc.QuotaFailure"},{"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"37s"}]}}`,
			37 * time.Second, true},
		{"Retry-After wins", 429, map[string]string{"Retry-After": "3"}, `{"error":{"code":429,"message":"Quota exceeded",
			"details":[{"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"37s"}]}}`, 3 * time.Second, true},
		{"overloaded", 503, nil, `{"error":{"code":503,"message":"The model is overloaded.","status":"UNAVAILABLE"}}`, 0, true},
		{"not found", 404, nil, `{"error":{"code":404,"message":"models/x is not found","status":"NOT_FOUND"}}`, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			up := newStub(t, reply{status: tt.status, header: tt.header, body: tt.body})
			p := providers.NewGemini(up.srv.Client(), up.srv.URL, testKey, providers.Limits{})
			_, err := p.Do(t.Context(), &providers.Request{Endpoint: "/v1/chat/completions",
				Body: []byte(`{"model":"g","messages":[{"role":"user","content":"hi"}]}`)}, nil)
			e, ok := errors.AsType[*providers.Error](err)
			if !ok || e.StatusCode != tt.status || e.RetryAfter != tt.retry || e.Retryable() != tt.retryable || e.Provider != "gemini" {
				t.Errorf("Do error = %#v, want status %d, retry after %v, retryable %v", e, tt.status, tt.retry, tt.retryable)
			}
		})
	}
}

func TestGeminiRefusesWithoutCalling(t *testing.T) {
	t.Parallel()
	up := newStub(t, reply{status: http.StatusOK, body: `{}`})
	p := providers.NewGemini(up.srv.Client(), up.srv.URL, testKey, providers.Limits{})
	for _, endpoint := range []string{"/v1/messages", "/v1/embeddings", "/v1/completions"} {
		_, err := p.Do(t.Context(), &providers.Request{Endpoint: endpoint, Body: []byte(`{"model":"g"}`)}, nil)
		if e, ok := errors.AsType[*providers.Error](err); !ok || e.StatusCode != 404 || e.Message != endpoint+" is not supported by gemini" {
			t.Errorf("Do(%s) error = %v, want a 404 naming the endpoint", endpoint, err)
		}
	}
	if len(up.requests()) != 0 {
		t.Errorf("upstream was called")
	}
}

// TestGeminiToolRoundTrip has Gemini call a function with a thought signature, and checks
// that the signature goes back with the call when the client sends the tool's result.
func TestGeminiToolRoundTrip(t *testing.T) {
	t.Parallel()
	up := newStub(t, reply{status: http.StatusOK, events: []string{
		`data: {"candidates":[{"content":{"role":"model","parts":[{"functionCall":{"name":"weather","args":{"city":"Paris"}},"thoughtSignature":"+/8="}]},"finishReason":"STOP","index":0}],"usageMetadata":{"promptTokenCount":30,"candidatesTokenCount":9,"totalTokenCount":39},"modelVersion":"gemini-3-pro","responseId":"r1"}`,
	}})
	p := providers.NewGemini(up.srv.Client(), up.srv.URL+"/v1beta", testKey, providers.Limits{})
	var got events
	res, err := p.Do(t.Context(), &providers.Request{Endpoint: "/v1/chat/completions", Stream: true, WantUsageChunk: true,
		Body: []byte(`{"model":"gemini-3-pro","stream":true,"messages":[{"role":"user","content":"weather in Paris?"}],
			"tools":[{"type":"function","function":{"name":"weather","parameters":{"type":"object"}}}]}`)}, got.emit)
	if err != nil {
		t.Fatal(err)
	}
	a := joinChat(t, got)
	if len(a.Calls) != 1 || a.Calls[0].Name != "weather" || a.Calls[0].Arguments != `{"city":"Paris"}` || a.Finish != "tool_calls" {
		t.Fatalf("joined stream = %+v, want one weather call finishing with tool_calls", a)
	}
	want := &tokens.Usage{PromptTokens: 30, CompletionTokens: 9}
	if !reflect.DeepEqual(a.Usage, want) || !reflect.DeepEqual(res.Usage, want) {
		t.Errorf("usage chunk %+v, Result.Usage %+v; want %+v", a.Usage, res.Usage, want)
	}

	// The client sends the conversation back with the tool's answer.
	next, err := json.Marshal(map[string]any{"model": "gemini-3-pro", "messages": []any{
		map[string]any{"role": "user", "content": "weather in Paris?"},
		map[string]any{"role": "assistant", "content": nil, "tool_calls": []any{map[string]any{"id": a.Calls[0].ID, "type": "function",
			"function": map[string]any{"name": "weather", "arguments": a.Calls[0].Arguments}}}},
		map[string]any{"role": "tool", "tool_call_id": a.Calls[0].ID, "content": "sunny"},
	}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Do(t.Context(), &providers.Request{Endpoint: "/v1/chat/completions", Stream: true, Body: next}, new(events).emit); err != nil {
		t.Fatal(err)
	}
	reqs := up.requests()
	jsonEqual(t, "second request", reqs[len(reqs)-1].Body, `{"contents":[{"role":"user","parts":[{"text":"weather in Paris?"}]},
		{"role":"model","parts":[{"thoughtSignature":"+/8=","functionCall":{"name":"weather","args":{"city":"Paris"}}}]},
		{"role":"user","parts":[{"functionResponse":{"name":"weather","response":{"content":"sunny"}}}]}]}`)
}

func TestGeminiStreamEnds(t *testing.T) {
	t.Parallel()
	text := `data: {"candidates":[{"content":{"role":"model","parts":[{"text":"Hi"}]}}],"responseId":"r"}`
	tests := []struct {
		name   string
		events []string
		want   error
	}{
		{"clean end after a finish reason", []string{text, `data: {"candidates":[{"content":{"role":"model","parts":[{"text":"!"}]},"finishReason":"STOP"}],"responseId":"r"}`}, nil},
		{"clean end without a finish reason", []string{text}, providers.ErrTruncated},
		{"nothing at all", []string{}, providers.ErrTruncated},
		{"not JSON", []string{text, `data: {"cand`}, providers.ErrBadResponse},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			up := newStub(t, reply{status: http.StatusOK, events: tt.events})
			p := providers.NewGemini(up.srv.Client(), up.srv.URL, testKey, providers.Limits{})
			var got events
			res, err := p.Do(t.Context(), &providers.Request{Endpoint: "/v1/chat/completions", Stream: true,
				Body: []byte(`{"model":"g","stream":true,"messages":[{"role":"user","content":"hi"}]}`)}, got.emit)
			if !errors.Is(err, tt.want) || (tt.want == nil) != (err == nil) {
				t.Fatalf("Do error = %v, want %v", err, tt.want)
			}
			if res == nil {
				t.Fatalf("Do returned no Result")
			}
			if a := joinChat(t, got); tt.want == nil && (a.Content != "Hi!" || a.Finish != "stop") {
				t.Errorf("joined stream = %+v, want Hi! and stop", a)
			} else if tt.want != nil && a.Finish != "" {
				t.Errorf("a failed stream finished with %q", a.Finish)
			}
		})
	}
}
