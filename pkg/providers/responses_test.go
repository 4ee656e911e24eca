package providers_test

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/sluicehq/sluice/pkg/providers"
	"github.com/sluicehq/sluice/pkg/tokens"
)

// responsesReq is a Responses request for an adapter.
func responsesReq(body string, stream bool) *providers.Request {
	return &providers.Request{Endpoint: "/v1/responses", Body: json.RawMessage(body), Stream: stream}
}

// respObject is what a test reads of a response object.
type respObject struct {
	ID                string `json:"id"`
	Object            string `json:"object"`
	Status            string `json:"status"`
	Store             bool   `json:"store"`
	IncompleteDetails *struct {
		Reason string `json:"reason"`
	} `json:"incomplete_details"`
	Output []struct {
		Type      string `json:"type"`
		ID        string `json:"id"`
		CallID    string `json:"call_id"`
		Name      string `json:"name"`
		Arguments string `json:"arguments"`
		Content   []struct {
			Type string `json:"type"`
			Text string `json:"text"`
		} `json:"content"`
	} `json:"output"`
	Usage *struct {
		InputTokens  int64 `json:"input_tokens"`
		OutputTokens int64 `json:"output_tokens"`
	} `json:"usage"`
}

func readResponse(t *testing.T, b []byte) respObject {
	t.Helper()
	var r respObject
	if err := json.Unmarshal(b, &r); err != nil || r.Object != "response" || !strings.HasPrefix(r.ID, "resp_") {
		t.Fatalf("not a response object: %s (%v)", b, err)
	}
	return r
}

func (r respObject) text() string {
	var s string
	for _, it := range r.Output {
		for _, c := range it.Content {
			s += c.Text
		}
	}
	return s
}

// TestResponsesPassthrough_Issue11: an openai channel whose host the registry names as
// having the Responses API gets the body as sent, at /v1/responses; the usage is read from
// the response's input and output tokens; a stream's events go through with their names
// up to response.completed; a response.failed is an error, not forwarded.
func TestResponsesPassthrough_Issue11(t *testing.T) {
	t.Parallel()
	const body = `{"model":"gpt-4.1","input":"hi","tools":[{"type":"web_search"}],"store":true}`
	build := func(t *testing.T, s *stub) providers.Provider {
		u, _ := url.Parse(s.srv.URL)
		p, err := providers.NewRegistry(providers.ClientConfig{}, providers.Limits{}, providers.WithNativeResponses(u.Host)).
			Build(providers.KindOpenAI, s.srv.URL+"/v1", testKey)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}

	whole := newStub(t, reply{status: 200, body: `{"id":"resp_1","object":"response","status":"completed","output":[],` +
		`"usage":{"input_tokens":7,"output_tokens":3,"total_tokens":10}}`})
	res, err := build(t, whole).Do(t.Context(), responsesReq(body, false), nil)
	if err != nil {
		t.Fatal(err)
	}
	got := whole.only(t)
	if got.Path != "/v1/responses" || string(got.Body) != body {
		t.Errorf("upstream got %s %s, want /v1/responses and the body as sent", got.Path, got.Body)
	}
	if want := (tokens.Usage{PromptTokens: 7, CompletionTokens: 3}); res.Usage == nil || *res.Usage != want {
		t.Errorf("Usage = %+v, want %+v", res.Usage, want)
	}

	streamed := newStub(t, reply{status: 200, events: []string{
		`event: response.created` + "\n" + `data: {"type":"response.created","sequence_number":0,"response":{"id":"resp_2"}}`,
		`event: response.output_text.delta` + "\n" + `data: {"type":"response.output_text.delta","sequence_number":1,"delta":"hi"}`,
		`event: response.completed` + "\n" + `data: {"type":"response.completed","sequence_number":2,"response":{"id":"resp_2","usage":{"input_tokens":5,"output_tokens":1}}}`,
	}})
	var evs events
	res, err = build(t, streamed).Do(t.Context(), responsesReq(body, true), evs.emit)
	if err != nil {
		t.Fatal(err)
	}
	if n := evs.names(); n != "response.created,response.output_text.delta,response.completed" {
		t.Errorf("events = %s", n)
	}
	if want := (tokens.Usage{PromptTokens: 5, CompletionTokens: 1}); res.Usage == nil || *res.Usage != want {
		t.Errorf("stream Usage = %+v, want %+v", res.Usage, want)
	}

	failed := newStub(t, reply{status: 200, events: []string{
		`event: response.created` + "\n" + `data: {"type":"response.created","sequence_number":0,"response":{"id":"resp_3"}}`,
		`event: response.failed` + "\n" + `data: {"type":"response.failed","sequence_number":1,"response":{"id":"resp_3","error":{"code":"server_error","message":"it broke"}}}`,
	}})
	evs = nil
	_, err = build(t, failed).Do(t.Context(), responsesReq(body, true), evs.emit)
	if e, ok := errors.AsType[*providers.Error](err); !ok || e.Message != "it broke" {
		t.Errorf("error = %v, want the response's error", err)
	}
	if n := evs.names(); n != "response.created" {
		t.Errorf("events = %s, want response.failed left to the ingress", n)
	}
}

// TestResponsesToChat_Issue11: an openai channel without the Responses API gets a chat
// completion: instructions as the system message, a function_call item as the assistant's
// tool call and its function_call_output as the tool message, function tools, tool_choice,
// max_output_tokens and text.format; the chat answer's tool call comes back as a
// function_call output item, with the usage in input and output tokens.
func TestResponsesToChat_Issue11(t *testing.T) {
	t.Parallel()
	s := newStub(t, reply{status: 200, body: `{"id":"chatcmpl-1","object":"chat.completion","model":"gpt-4o-mini",` +
		`"choices":[{"index":0,"message":{"role":"assistant","content":"Let me look.","tool_calls":[{"id":"call_9","type":"function",` +
		`"function":{"name":"weather","arguments":"{\"city\":\"Oslo\"}"}}]},"finish_reason":"tool_calls"}],` +
		`"usage":{"prompt_tokens":20,"completion_tokens":6,"total_tokens":26}}`})
	p := providers.NewOpenAI(providers.NewHTTPClient(providers.ClientConfig{}), s.srv.URL+"/v1", testKey, providers.Limits{})
	body := `{"model":"gpt-4o-mini","instructions":"Be brief.","max_output_tokens":50,"tool_choice":"auto",
		"text":{"format":{"type":"json_object"}},
		"tools":[{"type":"function","name":"weather","description":"Weather now","parameters":{"type":"object"}}],
		"input":[{"role":"user","content":"Weather in Oslo?"},
			{"type":"function_call","call_id":"call_1","name":"weather","arguments":"{\"city\":\"Oslo\"}"},
			{"type":"function_call_output","call_id":"call_1","output":"{\"temp\":3}"},
			{"type":"reasoning","id":"rs_1","summary":[]}]}`
	res, err := p.Do(t.Context(), responsesReq(body, false), nil)
	if err != nil {
		t.Fatal(err)
	}
	got := s.only(t)
	if got.Path != "/v1/chat/completions" {
		t.Errorf("upstream path = %s", got.Path)
	}
	jsonEqual(t, "chat request", got.Body, `{"model":"gpt-4o-mini","max_tokens":50,"tool_choice":"auto",
		"response_format":{"type":"json_object"},
		"tools":[{"type":"function","function":{"name":"weather","description":"Weather now","parameters":{"type":"object"}}}],
		"messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"Weather in Oslo?"},
			{"role":"assistant","content":null,"tool_calls":[{"id":"call_1","type":"function","function":{"name":"weather","arguments":"{\"city\":\"Oslo\"}"}}]},
			{"role":"tool","content":"{\"temp\":3}","tool_call_id":"call_1"}]}`)
	r := readResponse(t, res.Body)
	if r.Status != "completed" || r.Store || len(r.Output) != 2 || r.Output[0].Type != "message" || r.text() != "Let me look." {
		t.Fatalf("response = %s", res.Body)
	}
	if fc := r.Output[1]; fc.Type != "function_call" || fc.CallID != "call_9" || fc.Name != "weather" ||
		fc.Arguments != `{"city":"Oslo"}` || !strings.HasPrefix(fc.ID, "fc_") {
		t.Errorf("function call item = %+v", fc)
	}
	if r.Usage == nil || r.Usage.InputTokens != 20 || r.Usage.OutputTokens != 6 {
		t.Errorf("usage = %+v", r.Usage)
	}
}

// TestResponsesStreamToolCall_Issue11: a chat stream of text and then a tool call becomes
// a message item and a function_call item, each added, filled and done, numbered from 0,
// ending in response.completed with both items and the usage.
func TestResponsesStreamToolCall_Issue11(t *testing.T) {
	t.Parallel()
	chunk := func(delta string) string {
		return `data: {"id":"c1","object":"chat.completion.chunk","model":"m","choices":[{"index":0,"delta":` + delta + `,"finish_reason":null}]}`
	}
	s := newStub(t, reply{status: 200, events: []string{
		chunk(`{"role":"assistant","content":""}`), chunk(`{"content":"Checking"}`), chunk(`{"content":" now."}`),
		chunk(`{"tool_calls":[{"index":0,"id":"call_5","type":"function","function":{"name":"weather","arguments":""}}]}`),
		chunk(`{"tool_calls":[{"index":0,"function":{"arguments":"{\"city\":"}}]}`),
		chunk(`{"tool_calls":[{"index":0,"function":{"arguments":"\"Oslo\"}"}}]}`),
		`data: {"id":"c1","object":"chat.completion.chunk","model":"m","choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}`,
		`data: {"id":"c1","object":"chat.completion.chunk","model":"m","choices":[],"usage":{"prompt_tokens":9,"completion_tokens":4,"total_tokens":13}}`,
		`data: [DONE]`,
	}})
	p := providers.NewOpenAI(providers.NewHTTPClient(providers.ClientConfig{}), s.srv.URL+"/v1", testKey, providers.Limits{})
	var evs events
	res, err := p.Do(t.Context(), responsesReq(`{"model":"m","input":"weather?","stream":true,
		"tools":[{"type":"function","name":"weather","parameters":{"type":"object"}}]}`, true), evs.emit)
	if err != nil {
		t.Fatal(err)
	}
	want := "response.created,response.in_progress,response.output_item.added,response.content_part.added," +
		"response.output_text.delta,response.output_text.delta,response.output_text.done,response.content_part.done," +
		"response.output_item.done,response.output_item.added,response.function_call_arguments.delta," +
		"response.function_call_arguments.delta,response.function_call_arguments.done,response.output_item.done,response.completed"
	if got := evs.names(); got != want {
		t.Errorf("events =\n%s\nwant\n%s", got, want)
	}
	for i, ev := range evs {
		var e struct {
			SequenceNumber int `json:"sequence_number"`
		}
		if json.Unmarshal(ev.Data, &e) != nil || e.SequenceNumber != i {
			t.Errorf("event %d has sequence_number %d", i, e.SequenceNumber)
		}
	}
	var done struct {
		Arguments string `json:"arguments"`
		Name      string `json:"name"`
	}
	_ = json.Unmarshal(evs[12].Data, &done)
	if done.Arguments != `{"city":"Oslo"}` || done.Name != "weather" {
		t.Errorf("function_call_arguments.done = %s", evs[12].Data)
	}
	var last struct {
		Response json.RawMessage `json:"response"`
	}
	_ = json.Unmarshal(evs[len(evs)-1].Data, &last)
	r := readResponse(t, last.Response)
	if r.Status != "completed" || len(r.Output) != 2 || r.text() != "Checking now." || r.Output[1].CallID != "call_5" ||
		r.Output[1].Arguments != `{"city":"Oslo"}` || r.Usage == nil || r.Usage.InputTokens != 9 {
		t.Errorf("completed response = %s", last.Response)
	}
	if want := (tokens.Usage{PromptTokens: 9, CompletionTokens: 4}); res.Usage == nil || *res.Usage != want {
		t.Errorf("Usage = %+v, want %+v", res.Usage, want)
	}
}

// TestResponsesRefused_Issue11: what a translated call cannot honour is a 400 naming it,
// and nothing is sent upstream.
func TestResponsesRefused_Issue11(t *testing.T) {
	t.Parallel()
	tests := []struct{ name, body, want string }{
		{"web search", `{"model":"m","input":"hi","tools":[{"type":"web_search"}]}`, `built-in tool "web_search"`},
		{"file search", `{"model":"m","input":"hi","tools":[{"type":"file_search","vector_store_ids":["vs_1"]}]}`, `"file_search"`},
		{"computer use", `{"model":"m","input":"hi","tools":[{"type":"computer_use_preview"}]}`, `"computer_use_preview"`},
		{"code interpreter", `{"model":"m","input":"hi","tools":[{"type":"code_interpreter"}]}`, `"code_interpreter"`},
		{"previous response", `{"model":"m","input":"hi","previous_response_id":"resp_1","store":true}`, "previous_response_id"},
		{"conversation", `{"model":"m","input":"hi","conversation":"conv_1"}`, "conversation"},
		{"prompt template", `{"model":"m","prompt":{"id":"pmpt_1"},"input":"hi"}`, "prompt"},
		{"background", `{"model":"m","input":"hi","background":true}`, "background"},
		{"item reference", `{"model":"m","input":[{"type":"item_reference","id":"msg_1"}]}`, `"item_reference"`},
		{"file input", `{"model":"m","input":[{"role":"user","content":[{"type":"input_file","file_id":"file-1"}]}]}`, `"input_file"`},
		{"built-in tool choice", `{"model":"m","input":"hi","tool_choice":{"type":"web_search"}}`, `"web_search"`},
		{"no input", `{"model":"m","input":[]}`, "at least one message"},
	}
	s := newStub(t, reply{status: 200, body: `{}`})
	adapters := map[string]providers.Provider{
		"openai":    providers.NewOpenAI(providers.NewHTTPClient(providers.ClientConfig{}), s.srv.URL+"/v1", testKey, providers.Limits{}),
		"anthropic": providers.NewAnthropic(providers.NewHTTPClient(providers.ClientConfig{}), s.srv.URL, testKey, providers.Limits{}),
		"gemini":    providers.NewGemini(providers.NewHTTPClient(providers.ClientConfig{}), s.srv.URL+"/v1beta", testKey, providers.Limits{}),
	}
	for name, p := range adapters {
		for _, tt := range tests {
			t.Run(name+"/"+tt.name, func(t *testing.T) {
				t.Parallel()
				_, err := p.Do(t.Context(), responsesReq(tt.body, false), nil)
				e, ok := errors.AsType[*providers.Error](err)
				if !ok || e.StatusCode != http.StatusBadRequest || e.Retryable() || !strings.Contains(e.Message, tt.want) {
					t.Errorf("error = %v, want a 400 naming %s", err, tt.want)
				}
			})
		}
	}
	t.Cleanup(func() {
		if n := len(s.requests()); n != 0 {
			t.Errorf("upstream got %d requests, want none", n)
		}
	})
}

// TestResponsesRecap_Issue11: a stream's closing events repeat its text within
// MaxRecapBytes; past it they carry none, while the deltas still carry all of it.
func TestResponsesRecap_Issue11(t *testing.T) {
	t.Parallel()
	chunk := func(text string) string {
		return `data: {"id":"c1","object":"chat.completion.chunk","model":"m","choices":[{"index":0,"delta":{"content":"` + text + `"},"finish_reason":null}]}`
	}
	s := newStub(t, reply{status: 200, events: []string{chunk("0123456789"), chunk("abcdefghij"), `data: [DONE]`}})
	for _, tt := range []struct {
		recap int
		want  string
	}{{20, "0123456789abcdefghij"}, {19, ""}} {
		p := providers.NewOpenAI(providers.NewHTTPClient(providers.ClientConfig{}), s.srv.URL+"/v1", testKey,
			providers.Limits{MaxRecapBytes: tt.recap})
		var evs events
		if _, err := p.Do(t.Context(), responsesReq(`{"model":"m","input":"hi","stream":true}`, true), evs.emit); err != nil {
			t.Fatal(err)
		}
		var deltas, done string
		var final respObject
		for _, ev := range evs {
			var e struct {
				Delta, Text string
				Response    json.RawMessage
			}
			_ = json.Unmarshal(ev.Data, &e)
			switch ev.Name {
			case "response.output_text.delta":
				deltas += e.Delta
			case "response.output_text.done":
				done = e.Text
			case "response.completed":
				final = readResponse(t, e.Response)
			}
		}
		if deltas != "0123456789abcdefghij" || done != tt.want || final.text() != tt.want {
			t.Errorf("recap %d: deltas %q, done text %q, completed text %q; want the deltas whole and %q repeated",
				tt.recap, deltas, done, final.text(), tt.want)
		}
	}
}

// TestFakeServesEveryAPI_Issue11: the built-in fake model answers Responses, Messages and
// embeddings calls, whole and streamed, with its usual echo and token rule.
func TestFakeServesEveryAPI_Issue11(t *testing.T) {
	t.Parallel()
	f, err := providers.NewFake("")
	if err != nil {
		t.Fatal(err)
	}
	const wantText = "Hello from Sluice's fake model. You said: hi there"
	want := tokens.Usage{PromptTokens: 5, CompletionTokens: 9} // "hi there" + 3; nine words

	res, err := f.Do(t.Context(), responsesReq(`{"model":"fake-model","input":"hi there"}`, false), nil)
	if err != nil {
		t.Fatal(err)
	}
	if r := readResponse(t, res.Body); r.text() != wantText || r.Status != "completed" || *res.Usage != want ||
		r.Usage == nil || r.Usage.InputTokens != 5 || r.Usage.OutputTokens != 9 {
		t.Errorf("responses: %s, usage %+v", res.Body, res.Usage)
	}
	var evs events
	if res, err = f.Do(t.Context(), responsesReq(`{"model":"fake-model","input":"hi there","stream":true}`, true), evs.emit); err != nil {
		t.Fatal(err)
	}
	if n := evs.names(); !strings.HasPrefix(n, "response.created,response.in_progress,response.output_item.added,response.content_part.added,response.output_text.delta") ||
		!strings.HasSuffix(n, "response.output_text.done,response.content_part.done,response.output_item.done,response.completed") || *res.Usage != want {
		t.Errorf("responses stream: %s, usage %+v", n, res.Usage)
	}

	res, err = f.Do(t.Context(), &providers.Request{Endpoint: "/v1/messages",
		Body: json.RawMessage(`{"model":"fake-model","max_tokens":100,"messages":[{"role":"user","content":"hi there"}]}`)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	var m struct {
		Type    string `json:"type"`
		Content []struct{ Text string }
	}
	if json.Unmarshal(res.Body, &m) != nil || m.Type != "message" || len(m.Content) != 1 || m.Content[0].Text != wantText || *res.Usage != want {
		t.Errorf("messages: %s, usage %+v", res.Body, res.Usage)
	}
	evs = nil
	if res, err = f.Do(t.Context(), &providers.Request{Endpoint: "/v1/messages", Stream: true,
		Body: json.RawMessage(`{"model":"fake-model","max_tokens":100,"stream":true,"messages":[{"role":"user","content":"hi there"}]}`)}, evs.emit); err != nil {
		t.Fatal(err)
	}
	if n := evs.names(); !strings.HasPrefix(n, "message_start,content_block_start,content_block_delta") ||
		!strings.HasSuffix(n, "content_block_stop,message_delta,message_stop") || *res.Usage != want {
		t.Errorf("messages stream: %s, usage %+v", n, res.Usage)
	}

	res, err = f.Do(t.Context(), &providers.Request{Endpoint: "/v1/embeddings",
		Body: json.RawMessage(`{"model":"fake-embed","input":["hi there","hi there","other"],"dimensions":4}`)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	var e struct {
		Object string `json:"object"`
		Data   []struct {
			Index     int       `json:"index"`
			Embedding []float64 `json:"embedding"`
		} `json:"data"`
		Usage struct {
			PromptTokens int64 `json:"prompt_tokens"`
		} `json:"usage"`
	}
	if err := json.Unmarshal(res.Body, &e); err != nil || e.Object != "list" || len(e.Data) != 3 || len(e.Data[0].Embedding) != 4 ||
		e.Data[2].Index != 2 || e.Usage.PromptTokens != 5 || res.Usage.PromptTokens != 5 {
		t.Fatalf("embeddings: %s (%v)", res.Body, err)
	}
	if a, b, c := e.Data[0].Embedding, e.Data[1].Embedding, e.Data[2].Embedding; a[0] != b[0] || a[0] == c[0] {
		t.Errorf("embeddings of the same text differ, or of different texts agree: %v %v %v", a, b, c)
	}
}
