package providers_test

import (
	"encoding/json"
	"errors"
	"net/http"
	"reflect"
	"strings"
	"testing"

	"github.com/sluicehq/sluice/pkg/providers"
	"github.com/sluicehq/sluice/pkg/providers/providertest"
	"github.com/sluicehq/sluice/pkg/secret"
	"github.com/sluicehq/sluice/pkg/tokens"
)

// TestOpenAIURLAndAuth checks where each kind of base URL sends a request, with which key
// header, and which max tokens field a translated Messages request uses there.
func TestOpenAIURLAndAuth(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		azure     bool // built with NewAzure
		base      string
		endpoint  string
		wantPath  string
		wantQuery string
		wantAuth  [2]string // header and value
		wantMax   string    // the max tokens field of a translated Messages request
	}{
		{name: "openai", base: "http://api.openai.com/v1/", endpoint: "/v1/chat/completions",
			wantPath: "/v1/chat/completions", wantAuth: [2]string{"Authorization", "Bearer " + testKey.Reveal()}},
		{name: "openai messages", base: "http://api.openai.com/v1", endpoint: "/v1/messages",
			wantPath: "/v1/chat/completions", wantAuth: [2]string{"Authorization", "Bearer " + testKey.Reveal()},
			wantMax: "max_completion_tokens"},
		{name: "compatible server messages", base: "http://localhost:11434/v1", endpoint: "/v1/messages",
			wantPath: "/v1/chat/completions", wantAuth: [2]string{"Authorization", "Bearer " + testKey.Reveal()},
			wantMax: "max_tokens"},
		{name: "azure deployment", azure: true, base: "http://res.openai.azure.com/openai/deployments/gpt4o?api-version=2024-10-21",
			endpoint: "/v1/embeddings", wantPath: "/openai/deployments/gpt4o/embeddings", wantQuery: "api-version=2024-10-21",
			wantAuth: [2]string{"Api-Key", testKey.Reveal()}},
		{name: "azure v1 API", azure: true, base: "http://res.openai.azure.com/openai/v1/",
			endpoint: "/v1/chat/completions", wantPath: "/openai/v1/chat/completions",
			wantAuth: [2]string{"Api-Key", testKey.Reveal()}},
		{name: "azure host as openai kind", base: "http://res.openai.azure.com/openai/deployments/d?api-version=2024-10-21",
			endpoint: "/v1/messages", wantPath: "/openai/deployments/d/chat/completions", wantQuery: "api-version=2024-10-21",
			wantAuth: [2]string{"Api-Key", testKey.Reveal()}, wantMax: "max_completion_tokens"},
		{name: "azure with another host", azure: true, base: "http://gateway.example/openai/deployments/d?api-version=2025-01-01",
			endpoint: "/v1/messages", wantPath: "/openai/deployments/d/chat/completions", wantQuery: "api-version=2025-01-01",
			wantAuth: [2]string{"Api-Key", testKey.Reveal()}, wantMax: "max_completion_tokens"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			up := newStub(t, reply{status: http.StatusTeapot, body: `{"error":{"message":"stop here"}}`})
			var p providers.Provider = providers.NewOpenAI(dialTo(up.srv), tt.base, testKey, providers.Limits{})
			if tt.azure {
				var err error
				if p, err = providers.NewAzure(dialTo(up.srv), tt.base, testKey, providers.Limits{}); err != nil {
					t.Fatal(err)
				}
			}
			body := `{"model":"m","input":"hi","max_tokens":9,"messages":[{"role":"user","content":"hi"}]}`
			_, err := p.Do(t.Context(), &providers.Request{Endpoint: tt.endpoint, Body: []byte(body)}, nil)
			if e, ok := errors.AsType[*providers.Error](err); !ok || e.StatusCode != http.StatusTeapot || e.Message != "stop here" {
				t.Fatalf("Do error = %v, want the stub's 418", err)
			}
			got := up.only(t)
			if got.Path != tt.wantPath || got.Query != tt.wantQuery {
				t.Errorf("request to %s?%s, want %s?%s", got.Path, got.Query, tt.wantPath, tt.wantQuery)
			}
			if v := got.Header.Get(tt.wantAuth[0]); v != tt.wantAuth[1] {
				t.Errorf("header %s = %q, want %q", tt.wantAuth[0], v, tt.wantAuth[1])
			}
			if tt.wantAuth[0] != "Authorization" && got.Header.Get("Authorization") != "" {
				t.Errorf("Authorization sent along with %s", tt.wantAuth[0])
			}
			if tt.wantMax != "" {
				var sent map[string]json.RawMessage
				if err := json.Unmarshal(got.Body, &sent); err != nil {
					t.Fatal(err)
				}
				other := map[string]string{"max_tokens": "max_completion_tokens", "max_completion_tokens": "max_tokens"}[tt.wantMax]
				if string(sent[tt.wantMax]) != "9" || sent[other] != nil {
					t.Errorf("translated request = %s, want %s 9 and no %s", got.Body, tt.wantMax, other)
				}
			} else if string(got.Body) != body {
				t.Errorf("body = %s, want it as sent", got.Body)
			}
		})
	}
}

func TestNewAzureRejects(t *testing.T) {
	t.Parallel()
	for _, base := range []string{"", "res.openai.azure.com/openai", "ftp://res/openai", "https://", "://x"} {
		if _, err := providers.NewAzure(http.DefaultClient, base, "k", providers.Limits{}); err == nil {
			t.Errorf("NewAzure(%q) succeeded, want an error", base)
		}
	}
}

// TestOpenAIPassThrough checks that completions and embeddings go up and come back
// untouched, base64 embeddings included, apart from the usage options of a stream.
func TestOpenAIPassThrough(t *testing.T) {
	t.Parallel()
	t.Run("base64 embeddings", func(t *testing.T) {
		t.Parallel()
		u, srv := providertest.Start(t, providertest.Config{})
		p := providers.NewOpenAI(srv.Client(), srv.URL+"/v1", testKey, providers.Limits{})
		body := `{"model":"text-embedding-3-small","input":["one","two"],"encoding_format":"base64","dimensions":8}`
		res, err := p.Do(t.Context(), &providers.Request{Endpoint: "/v1/embeddings", Body: []byte(body)}, nil)
		if err != nil {
			t.Fatal(err)
		}
		var got struct {
			Data []struct {
				Embedding string `json:"embedding"`
			} `json:"data"`
		}
		if err := json.Unmarshal(res.Body, &got); err != nil || len(got.Data) != 2 || got.Data[0].Embedding == "" {
			t.Fatalf("Body = %s, want two base64 embeddings (%v)", res.Body, err)
		}
		if res.Usage == nil || res.Usage.PromptTokens != u.Stats().PromptTokens || res.Usage.CompletionTokens != 0 {
			t.Errorf("Usage = %+v, want %d prompt tokens", res.Usage, u.Stats().PromptTokens)
		}
	})
	t.Run("bodies byte for byte", func(t *testing.T) {
		t.Parallel()
		answer := `{"object":"list","data":[{"object":"embedding","index":0,"embedding":"AACAPwAAAEA="}],"model":"e","usage":{"prompt_tokens":2,"total_tokens":2}}`
		up := newStub(t, reply{status: http.StatusOK, body: answer})
		p := providers.NewOpenAI(up.srv.Client(), up.srv.URL+"/v1", testKey, providers.Limits{})
		body := `{"input":"hi",  "model":"e","encoding_format":"base64"}`
		res, err := p.Do(t.Context(), &providers.Request{Endpoint: "/v1/embeddings", Body: []byte(body)}, nil)
		if err != nil {
			t.Fatal(err)
		}
		if got := up.only(t); string(got.Body) != body || got.Path != "/v1/embeddings" {
			t.Errorf("upstream got %s %s, want %s", got.Path, got.Body, body)
		}
		if string(res.Body) != answer {
			t.Errorf("Body = %s, want %s", res.Body, answer)
		}
	})
	t.Run("completions stream", func(t *testing.T) {
		t.Parallel()
		_, srv := providertest.Start(t, providertest.Config{})
		p := providers.NewOpenAI(srv.Client(), srv.URL+"/v1", testKey, providers.Limits{})
		var got events
		res, err := p.Do(t.Context(), &providers.Request{Endpoint: "/v1/completions", Stream: true,
			Body: []byte(`{"model":"m","prompt":"say three words","stream":true}`)}, got.emit)
		if err != nil {
			t.Fatal(err)
		}
		var text string
		for _, ev := range got {
			var c struct {
				Choices []struct {
					Text string `json:"text"`
				} `json:"choices"`
			}
			if ev.Name != "" || json.Unmarshal(ev.Data, &c) != nil || len(c.Choices) == 0 {
				t.Fatalf("event %s %s is not a completion chunk with a choice", ev.Name, ev.Data)
			}
			text += c.Choices[0].Text
		}
		if text != "Echo: say three words" || res.Usage == nil || res.Usage.CompletionTokens != 4 {
			t.Errorf("text %q, usage %+v; want the echo and 4 completion tokens", text, res.Usage)
		}
	})
}

// TestOpenAIMessages checks the Messages translation over HTTP: what goes up, and what a
// Messages client gets back, whole and streamed, tool calls included.
func TestOpenAIMessages(t *testing.T) {
	t.Parallel()
	request := `{"model":"gpt","max_tokens":50,"system":"Be brief.","messages":[{"role":"user","content":"weather in Paris?"}],
		"tools":[{"name":"get_weather","input_schema":{"type":"object","properties":{"city":{"type":"string"}}}}]}`
	t.Run("whole answer", func(t *testing.T) {
		t.Parallel()
		up := newStub(t, reply{status: http.StatusOK, body: `{"id":"chatcmpl-9","object":"chat.completion","created":1,"model":"gpt-4o",
			"choices":[{"index":0,"message":{"role":"assistant","content":null,"refusal":null,"tool_calls":[
				{"id":"call_9","type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Paris\"}"}}]},
				"logprobs":null,"finish_reason":"tool_calls"}],
			"usage":{"prompt_tokens":40,"completion_tokens":12,"total_tokens":52},"system_fingerprint":"fp"}`})
		p := providers.NewOpenAI(up.srv.Client(), up.srv.URL+"/v1", testKey, providers.Limits{})
		res, err := p.Do(t.Context(), &providers.Request{Endpoint: "/v1/messages", Body: []byte(request)}, nil)
		if err != nil {
			t.Fatal(err)
		}
		jsonEqual(t, "upstream body", up.only(t).Body, `{"model":"gpt","max_tokens":50,
			"messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"weather in Paris?"}],
			"tools":[{"type":"function","function":{"name":"get_weather","parameters":{"type":"object","properties":{"city":{"type":"string"}}}}}]}`)
		jsonEqual(t, "answer", res.Body, `{"id":"msg_chatcmpl-9","type":"message","role":"assistant","model":"gpt-4o",
			"content":[{"type":"tool_use","id":"call_9","name":"get_weather","input":{"city":"Paris"}}],
			"stop_reason":"tool_use","stop_sequence":null,"usage":{"input_tokens":40,"output_tokens":12}}`)
		if want := (tokens.Usage{PromptTokens: 40, CompletionTokens: 12}); res.Usage == nil || *res.Usage != want {
			t.Errorf("Usage = %+v, want %+v", res.Usage, want)
		}
	})
	t.Run("stream", func(t *testing.T) {
		t.Parallel()
		chunk := func(s string) string {
			return `data: {"id":"chatcmpl-9","object":"chat.completion.chunk","created":1,"model":"gpt-4o",` + s + `}`
		}
		up := newStub(t, reply{status: http.StatusOK, events: []string{
			chunk(`"choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]`),
			chunk(`"choices":[{"index":0,"delta":{"content":"Checking."},"finish_reason":null}]`),
			chunk(`"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_9","type":"function","function":{"name":"get_weather","arguments":""}}]},"finish_reason":null}]`),
			chunk(`"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"city\":"}}]},"finish_reason":null}]`),
			chunk(`"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"\"Paris\"}"}}]},"finish_reason":null}]`),
			chunk(`"choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]`),
			chunk(`"choices":[],"usage":{"prompt_tokens":40,"completion_tokens":12,"total_tokens":52}`),
			"data: [DONE]",
		}})
		p := providers.NewOpenAI(up.srv.Client(), up.srv.URL+"/v1", testKey, providers.Limits{})
		var got events
		res, err := p.Do(t.Context(), &providers.Request{Endpoint: "/v1/messages", Stream: true,
			Body: []byte(strings.Replace(request, `{"model"`, `{"stream":true,"model"`, 1))}, got.emit)
		if err != nil {
			t.Fatal(err)
		}
		var sent struct {
			Stream        bool `json:"stream"`
			StreamOptions struct {
				IncludeUsage bool `json:"include_usage"`
			} `json:"stream_options"`
		}
		if err := json.Unmarshal(up.only(t).Body, &sent); err != nil || !sent.Stream || !sent.StreamOptions.IncludeUsage {
			t.Errorf("upstream body = %s, want a stream that includes usage", up.only(t).Body)
		}
		wantNames := "message_start,content_block_start,content_block_delta,content_block_stop," +
			"content_block_start,content_block_delta,content_block_delta,content_block_stop,message_delta,message_stop"
		if got.names() != wantNames {
			t.Errorf("events = %s, want %s", got.names(), wantNames)
		}
		var text, input string
		for _, ev := range got {
			var e struct {
				Delta struct {
					Text        string `json:"text"`
					PartialJSON string `json:"partial_json"`
					StopReason  string `json:"stop_reason"`
				} `json:"delta"`
				Usage *struct {
					InputTokens  int `json:"input_tokens"`
					OutputTokens int `json:"output_tokens"`
				} `json:"usage"`
			}
			if err := json.Unmarshal(ev.Data, &e); err != nil {
				t.Fatal(err)
			}
			text, input = text+e.Delta.Text, input+e.Delta.PartialJSON
			if ev.Name == "message_delta" && (e.Delta.StopReason != "tool_use" || e.Usage == nil ||
				e.Usage.InputTokens != 40 || e.Usage.OutputTokens != 12) {
				t.Errorf("message_delta = %s, want stop reason tool_use and usage 40/12", ev.Data)
			}
		}
		if text != "Checking." || input != `{"city":"Paris"}` {
			t.Errorf("text %q, tool input %q", text, input)
		}
		if want := (tokens.Usage{PromptTokens: 40, CompletionTokens: 12}); res.Usage == nil || *res.Usage != want {
			t.Errorf("Usage = %+v, want %+v", res.Usage, want)
		}
	})
	t.Run("untranslatable request", func(t *testing.T) {
		t.Parallel()
		up := newStub(t, reply{status: http.StatusOK, body: `{}`})
		p := providers.NewOpenAI(up.srv.Client(), up.srv.URL+"/v1", testKey, providers.Limits{})
		_, err := p.Do(t.Context(), &providers.Request{Endpoint: "/v1/messages", Body: []byte(`{"model":"m","max_tokens":1,
			"messages":[{"role":"user","content":[{"type":"document","source":{"type":"text","data":"x"}}]}]}`)}, nil)
		if e, ok := errors.AsType[*providers.Error](err); !ok || e.StatusCode != 400 || e.Provider != "openai" {
			t.Errorf("Do error = %v, want a 400 from openai", err)
		}
		if len(up.requests()) != 0 {
			t.Errorf("upstream was called")
		}
	})
}

func TestRegistry(t *testing.T) {
	t.Parallel()
	r := providers.NewRegistry(providers.ClientConfig{}, providers.Limits{})
	t.Cleanup(r.CloseIdle)
	tests := []struct {
		kind, base string
		want       string // the adapter's type, or "" for an error
	}{
		{providers.KindOpenAI, "", "*providers.OpenAI"},
		{providers.KindAzure, "https://res.openai.azure.com/openai/deployments/d?api-version=2024-10-21", "*providers.OpenAI"},
		{providers.KindAzure, "", ""},
		{providers.KindAnthropic, "", "*providers.Anthropic"},
		{providers.KindGemini, "", "*providers.Gemini"},
		{providers.KindFake, "", "*providers.Fake"},
		{"cohere", "", ""},
	}
	for _, tt := range tests {
		p, err := r.Build(tt.kind, tt.base, secret.Secret("k"))
		switch {
		case tt.want == "" && (err == nil || p != nil):
			t.Errorf("Build(%q, %q) = %v, %v; want a nil Provider and an error", tt.kind, tt.base, p, err)
		case tt.want != "" && (err != nil || reflect.TypeOf(p).String() != tt.want):
			t.Errorf("Build(%q, %q) = %T, %v; want a %s", tt.kind, tt.base, p, err, tt.want)
		}
		if got := providers.Known(tt.kind); got != (tt.kind != "cohere") {
			t.Errorf("Known(%q) = %v", tt.kind, got)
		}
	}
}
