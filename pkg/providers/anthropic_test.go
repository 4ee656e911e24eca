package providers_test

import (
	"errors"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/pkg/providers"
	"github.com/sluicehq/sluice/pkg/tokens"
)

// A recorded Anthropic stream: a text block, then a tool call with its input in pieces.
var anthropicToolStream = []string{
	"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_01\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-sonnet-4-5\",\"content\":[],\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{\"input_tokens\":472,\"output_tokens\":2}}}",
	"event: ping\ndata: {\"type\": \"ping\"}",
	"event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}",
	"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Okay, let me check.\"}}",
	"event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}",
	"event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"tool_use\",\"id\":\"toolu_01\",\"name\":\"get_weather\",\"input\":{}}}",
	"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"\"}}",
	"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"location\\\":\"}}",
	"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\" \\\"San Francisco, CA\\\"}\"}}",
	"event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":1}",
	"event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":89}}",
	"event: message_stop\ndata: {\"type\":\"message_stop\"}",
}

func TestAnthropicRequest(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		base     string // appended to the stub's URL
		endpoint string
		stream   bool
		body     string
		wantBody string // "" means the body as sent
	}{
		{name: "messages", base: "", endpoint: "/v1/messages",
			body: `{"model":"claude","max_tokens":5,"messages":[{"role":"user","content":"hi"}],"cache_control":{"type":"ephemeral"}}`},
		{name: "messages, base URL with /v1/", base: "/v1/", endpoint: "/v1/messages", stream: true,
			body: `{"model":"claude","max_tokens":5,"stream":true,"messages":[{"role":"user","content":"hi"}]}`},
		{name: "chat translated", base: "/", endpoint: "/v1/chat/completions",
			body:     `{"model":"claude","messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"hi"}],"max_tokens":7}`,
			wantBody: `{"model":"claude","max_tokens":7,"system":[{"type":"text","text":"Be brief."}],"messages":[{"role":"user","content":[{"type":"text","text":"hi"}]}]}`},
		{name: "chat stream translated", endpoint: "/v1/chat/completions", stream: true,
			body:     `{"model":"claude","messages":[{"role":"user","content":"hi"}],"stream":true,"stream_options":{"include_usage":true}}`,
			wantBody: `{"model":"claude","max_tokens":4096,"stream":true,"messages":[{"role":"user","content":[{"type":"text","text":"hi"}]}]}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			up := newStub(t, reply{status: http.StatusBadRequest,
				body: `{"type":"error","error":{"type":"invalid_request_error","message":"stop here"}}`})
			p := providers.NewAnthropic(up.srv.Client(), up.srv.URL+tt.base, testKey, providers.Limits{})
			_, err := p.Do(t.Context(), &providers.Request{Endpoint: tt.endpoint, Body: []byte(tt.body), Stream: tt.stream},
				new(events).emit)
			if e, ok := errors.AsType[*providers.Error](err); !ok || e.StatusCode != 400 || e.Message != "stop here" ||
				e.Type != "invalid_request_error" {
				t.Errorf("Do error = %v, want the upstream's 400", err)
			}
			got := up.only(t)
			if got.Method != http.MethodPost || got.Path != "/v1/messages" {
				t.Errorf("request = %s %s, want POST /v1/messages", got.Method, got.Path)
			}
			want := map[string]string{"X-Api-Key": testKey.Reveal(), "Anthropic-Version": "2023-06-01",
				"Content-Type": "application/json", "Authorization": ""}
			if tt.stream {
				want["Accept"] = "text/event-stream"
			}
			for k, v := range want {
				if got.Header.Get(k) != v {
					t.Errorf("header %s = %q, want %q", k, got.Header.Get(k), v)
				}
			}
			jsonEqual(t, "upstream body", got.Body, cmpOr(tt.wantBody, tt.body))
		})
	}
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

func TestAnthropicNative(t *testing.T) {
	t.Parallel()
	t.Run("whole answer passed through", func(t *testing.T) {
		t.Parallel()
		body := `{"id":"msg_1","type":"message","role":"assistant","model":"claude","content":[{"type":"text","text":"Hi","citations":null}],"stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":10,"cache_read_input_tokens":4,"output_tokens":3,"service_tier":"standard"}}`
		up := newStub(t, reply{status: http.StatusOK, body: body})
		p := providers.NewAnthropic(up.srv.Client(), up.srv.URL, testKey, providers.Limits{})
		res, err := p.Do(t.Context(), &providers.Request{Endpoint: "/v1/messages", Body: []byte(`{}`)}, nil)
		if err != nil {
			t.Fatal(err)
		}
		if string(res.Body) != body {
			t.Errorf("Body = %s, want the upstream's bytes", res.Body)
		}
		if want := (tokens.Usage{PromptTokens: 14, CompletionTokens: 3}); res.Usage == nil || *res.Usage != want {
			t.Errorf("Usage = %+v, want %+v", res.Usage, want)
		}
	})
	t.Run("stream forwarded event by event", func(t *testing.T) {
		t.Parallel()
		up := newStub(t, reply{status: http.StatusOK, events: anthropicToolStream})
		p := providers.NewAnthropic(up.srv.Client(), up.srv.URL, testKey, providers.Limits{})
		var got events
		res, err := p.Do(t.Context(), &providers.Request{Endpoint: "/v1/messages", Body: []byte(`{}`), Stream: true}, got.emit)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != len(anthropicToolStream) {
			t.Fatalf("emitted %d events, want %d", len(got), len(anthropicToolStream))
		}
		for i, ev := range got {
			name, data, _ := strings.Cut(anthropicToolStream[i], "\ndata: ")
			if "event: "+ev.Name != name || string(ev.Data) != data {
				t.Errorf("event %d = %s %s, want %s %s", i, ev.Name, ev.Data, name, data)
			}
		}
		if want := (tokens.Usage{PromptTokens: 472, CompletionTokens: 89}); res.Usage == nil || *res.Usage != want {
			t.Errorf("Usage = %+v, want %+v", res.Usage, want)
		}
	})
	t.Run("error event mid-stream", func(t *testing.T) {
		t.Parallel()
		up := newStub(t, reply{status: http.StatusOK, events: []string{anthropicToolStream[0],
			"event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}"}})
		p := providers.NewAnthropic(up.srv.Client(), up.srv.URL, testKey, providers.Limits{})
		var got events
		res, err := p.Do(t.Context(), &providers.Request{Endpoint: "/v1/messages", Body: []byte(`{}`), Stream: true}, got.emit)
		e, ok := errors.AsType[*providers.Error](err)
		if !ok || e.StatusCode != 529 || e.Type != "overloaded_error" || e.Message != "Overloaded" || !e.Retryable() {
			t.Errorf("Do error = %v, want a retryable 529 overloaded_error", err)
		}
		if got.names() != "message_start" {
			t.Errorf("emitted %s, want only message_start (the error is not forwarded)", got.names())
		}
		if res == nil || res.Usage == nil || res.Usage.PromptTokens != 472 {
			t.Errorf("Result = %+v, want the partial usage", res)
		}
	})
}

func TestAnthropicChat(t *testing.T) {
	t.Parallel()
	t.Run("stream with a tool call and the usage chunk", func(t *testing.T) {
		t.Parallel()
		up := newStub(t, reply{status: http.StatusOK, events: anthropicToolStream})
		p := providers.NewAnthropic(up.srv.Client(), up.srv.URL, testKey, providers.Limits{})
		var got events
		res, err := p.Do(t.Context(), &providers.Request{Endpoint: "/v1/chat/completions", Stream: true, WantUsageChunk: true,
			Body: []byte(`{"model":"claude","messages":[{"role":"user","content":"weather?"}],"stream":true}`)}, got.emit)
		if err != nil {
			t.Fatal(err)
		}
		want := chatAnswer{Content: "Okay, let me check.", Finish: "tool_calls",
			Calls: []toolCall{{ID: "toolu_01", Name: "get_weather", Arguments: `{"location": "San Francisco, CA"}`}},
			Usage: &tokens.Usage{PromptTokens: 472, CompletionTokens: 89}}
		if a := joinChat(t, got); !reflect.DeepEqual(a, want) {
			t.Errorf("joined stream = %+v, want %+v", a, want)
		}
		if *res.Usage != *want.Usage {
			t.Errorf("Usage = %+v, want %+v", res.Usage, want.Usage)
		}
	})
	t.Run("whole answer", func(t *testing.T) {
		t.Parallel()
		up := newStub(t, reply{status: http.StatusOK, body: `{"id":"msg_1","type":"message","role":"assistant","model":"claude",
			"content":[{"type":"text","text":"It is "},{"type":"text","text":"sunny."}],"stop_reason":"max_tokens","stop_sequence":null,
			"usage":{"input_tokens":10,"output_tokens":3}}`})
		p := providers.NewAnthropic(up.srv.Client(), up.srv.URL, testKey, providers.Limits{})
		res, err := p.Do(t.Context(), &providers.Request{Endpoint: "/v1/chat/completions",
			Body: []byte(`{"model":"claude","messages":[{"role":"user","content":"weather?"}]}`)}, nil)
		if err != nil {
			t.Fatal(err)
		}
		jsonEqual(t, "answer", res.Body, `{"id":"msg_1","object":"chat.completion","created":`+createdOf(t, res.Body)+`,"model":"claude",
			"choices":[{"index":0,"message":{"role":"assistant","content":"It is sunny."},"finish_reason":"length"}],
			"usage":{"prompt_tokens":10,"completion_tokens":3,"total_tokens":13}}`)
	})
}

// createdOf returns the created field of a chat completion, which is the time of the call.
func createdOf(t *testing.T, body []byte) string {
	t.Helper()
	_, rest, ok := strings.Cut(string(body), `"created":`)
	n, _, _ := strings.Cut(rest, ",")
	if !ok || n == "" || n == "0" {
		t.Fatalf("no created time in %s", body)
	}
	return n
}

func TestAnthropicErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		status    int
		header    map[string]string
		body      string
		wantType  string
		wantMsg   string
		retry     time.Duration
		retryable bool
	}{
		{"rate limited", 429, map[string]string{"Retry-After": "7"},
			`{"type":"error","error":{"type":"rate_limit_error","message":"Number of requests has exceeded your rate limit"}}`,
			"rate_limit_error", "Number of requests has exceeded your rate limit", 7 * time.Second, true},
		{"overloaded", 529, nil, `{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}`,
			"overloaded_error", "Overloaded", 0, true},
		{"too large", 413, nil, `{"type":"error","error":{"type":"request_too_large","message":"Request exceeds the maximum allowed number of bytes."}}`,
			"request_too_large", "Request exceeds the maximum allowed number of bytes.", 0, false},
		{"bad key", 401, nil, `{"type":"error","error":{"type":"authentication_error","message":"invalid x-api-key"}}`,
			"authentication_error", "invalid x-api-key", 0, false},
		{"not JSON", 502, nil, `<html>bad gateway</html>`, "", "Bad Gateway", 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			up := newStub(t, reply{status: tt.status, header: tt.header, body: tt.body})
			p := providers.NewAnthropic(up.srv.Client(), up.srv.URL, testKey, providers.Limits{})
			for _, endpoint := range []string{"/v1/messages", "/v1/chat/completions"} {
				_, err := p.Do(t.Context(), &providers.Request{Endpoint: endpoint,
					Body: []byte(`{"model":"claude","max_tokens":1,"messages":[{"role":"user","content":"hi"}]}`)}, nil)
				e, ok := errors.AsType[*providers.Error](err)
				if !ok || e.StatusCode != tt.status || e.Type != tt.wantType || e.Message != tt.wantMsg ||
					e.RetryAfter != tt.retry || e.Retryable() != tt.retryable || e.Provider != "anthropic" {
					t.Errorf("%s: error = %#v, want status %d type %q message %q retry after %v retryable %v",
						endpoint, e, tt.status, tt.wantType, tt.wantMsg, tt.retry, tt.retryable)
				}
			}
		})
	}
}

// TestAnthropicRefusesWithoutCalling checks requests that are answered without a call.
func TestAnthropicRefusesWithoutCalling(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		endpoint string
		body     string
		status   int
	}{
		{"embeddings", "/v1/embeddings", `{"model":"claude","input":"hi"}`, 404},
		{"completions", "/v1/completions", `{"model":"claude","prompt":"hi"}`, 404},
		{"chat with n=2", "/v1/chat/completions", `{"model":"claude","n":2,"messages":[{"role":"user","content":"hi"}]}`, 400},
		{"chat not JSON", "/v1/chat/completions", `{"model"`, 400},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			up := newStub(t, reply{status: http.StatusOK, body: `{}`})
			p := providers.NewAnthropic(up.srv.Client(), up.srv.URL, testKey, providers.Limits{})
			_, err := p.Do(t.Context(), &providers.Request{Endpoint: tt.endpoint, Body: []byte(tt.body)}, nil)
			if e, ok := errors.AsType[*providers.Error](err); !ok || e.StatusCode != tt.status || e.Retryable() {
				t.Errorf("Do error = %v, want a non-retryable %d", err, tt.status)
			}
			if n := len(up.requests()); n != 0 {
				t.Errorf("upstream got %d requests, want none", n)
			}
		})
	}
}
