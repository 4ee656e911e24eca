package e2e

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/openai/openai-go/v3/responses"

	"github.com/sluicehq/sluice/pkg/providers/providertest"
)

// The OpenAI Responses API (POST /v1/responses) end to end, with the official openai-go
// client, through the real stack to fake upstreams over real HTTP: an openai channel whose
// upstream has the Responses API (passed through), one whose upstream has only chat
// completions, an Anthropic channel and a Gemini channel (translated).

// responsesStack is a stack whose worker knows native as an upstream with the Responses
// API, and a client for it.
func responsesStack(t *testing.T, native *httptest.Server) (*stack, openai.Client, createdKey) {
	t.Helper()
	s := newStack(t, stackOpts{noWorker: true})
	if native != nil {
		u, err := url.Parse(native.URL)
		if err != nil {
			t.Fatal(err)
		}
		s.wcfg.ResponsesHosts = []string{u.Host}
	}
	s.ops, s.stopW = s.startWorker()
	k := s.newKey(nil)
	return s, openai.NewClient(option.WithBaseURL(s.base+"/v1"), option.WithAPIKey(k.Key), option.WithMaxRetries(0)), k
}

// streamOrder checks a Responses stream's event types against the order of a one-message
// answer, and its sequence numbers; it returns the joined text deltas and the final event.
func streamOrder(t *testing.T, events []responses.ResponseStreamEventUnion) (string, responses.ResponseStreamEventUnion) {
	t.Helper()
	var types []string
	var text strings.Builder
	for i, ev := range events {
		if ev.SequenceNumber != int64(i) {
			t.Errorf("event %d (%s) has sequence_number %d", i, ev.Type, ev.SequenceNumber)
		}
		if ev.Type == "response.output_text.delta" {
			text.WriteString(ev.Delta)
			if len(types) > 0 && types[len(types)-1] == ev.Type {
				continue // one or more deltas
			}
		}
		types = append(types, ev.Type)
	}
	want := "response.created response.in_progress response.output_item.added response.content_part.added " +
		"response.output_text.delta response.output_text.done response.content_part.done response.output_item.done response.completed"
	if got := strings.Join(types, " "); got != want {
		t.Errorf("events:\n%s\nwant\n%s", got, want)
	}
	if len(events) == 0 {
		t.Fatal("no events")
	}
	return text.String(), events[len(events)-1]
}

// TestResponsesSDK_Issue11: Responses.New and Responses.NewStreaming through Sluice to each
// kind of channel: the answer's text, status and usage, the stream's events in order with
// their sequence numbers, and the usage and cost in the ledger, charged once per job.
func TestResponsesSDK_Issue11(t *testing.T) {
	t.Parallel()
	_, chatSrv := providertest.Start(t, providertest.Config{})
	nativeUp, nativeSrv := providertest.Start(t, providertest.Config{})
	gemUp, err := providertest.New(providertest.Config{})
	if err != nil {
		t.Fatal(err)
	}
	gemSrv := httptest.NewServer(http.HandlerFunc(gemUp.ServeGemini))
	t.Cleanup(func() { gemUp.Close(); gemSrv.Close() })

	s, client, _ := responsesStack(t, nativeSrv)
	s.channel(map[string]any{"name": "native", "provider": "openai", "base_url": nativeSrv.URL + "/v1", "models": []string{"gpt-native"}})
	s.channel(map[string]any{"name": "chat", "provider": "openai", "base_url": chatSrv.URL + "/v1", "models": []string{"gpt-chat"}})
	s.channel(map[string]any{"name": "claude", "provider": "anthropic", "base_url": chatSrv.URL, "api_key": "sk-ant-test-123456",
		"models": []string{"claude-x"}})
	s.channel(map[string]any{"name": "gemini", "provider": "gemini", "base_url": gemSrv.URL + "/v1beta", "api_key": "AIza-test-0123456789",
		"models": []string{"gemini-x"}})
	for _, m := range []string{"gpt-native", "gpt-chat", "claude-x", "gemini-x"} {
		s.price(m, 2, 8)
	}
	ctx := context.Background()
	const prompt, instructions = "tell me about sluice gates", "be brief"
	want, pt, ct := fakeAnswer(prompt)
	pt += int64(len(strings.Fields(instructions)) + 3) // the instructions are one more text

	for _, model := range []string{"gpt-native", "gpt-chat", "claude-x", "gemini-x"} {
		t.Run(model, func(t *testing.T) {
			params := responses.ResponseNewParams{Model: model, Instructions: openai.String(instructions),
				Input: responses.ResponseNewParamsInputUnion{OfString: openai.String(prompt)}}
			var raw *http.Response
			resp, err := client.Responses.New(ctx, params, option.WithResponseInto(&raw))
			if err != nil {
				t.Fatalf("Responses.New: %v", err)
			}
			if resp.OutputText() != want || resp.Status != responses.ResponseStatusCompleted || !strings.HasPrefix(resp.ID, "resp_") ||
				resp.Usage.InputTokens != pt || resp.Usage.OutputTokens != ct || resp.Usage.TotalTokens != pt+ct {
				t.Errorf("response %s, want %q with usage %d/%d", resp.RawJSON(), want, pt, ct)
			}
			s.checkLedger(raw.Header.Get("Sluice-Job-Id"), pt, ct, 2, 8)

			stream := client.Responses.NewStreaming(ctx, params, option.WithResponseInto(&raw))
			var events []responses.ResponseStreamEventUnion
			for stream.Next() {
				events = append(events, stream.Current())
			}
			if err := stream.Err(); err != nil {
				t.Fatalf("stream: %v", err)
			}
			text, last := streamOrder(t, events)
			if text != want || last.Response.OutputText() != want || last.Response.Usage.InputTokens != pt ||
				last.Response.Usage.OutputTokens != ct || last.Response.Status != responses.ResponseStatusCompleted {
				t.Errorf("streamed %q, completed %s; want %q with usage %d/%d", text, last.Response.RawJSON(), want, pt, ct)
			}
			if raw.Header.Get("Content-Type") != "text/event-stream" {
				t.Errorf("stream Content-Type %q", raw.Header.Get("Content-Type"))
			}
			s.checkLedger(raw.Header.Get("Sluice-Job-Id"), pt, ct, 2, 8)
		})
	}
	if st := nativeUp.Stats(); st.Succeeded != 2 {
		t.Errorf("the native upstream answered %d calls at /v1/responses, want 2", st.Succeeded)
	}

	// Async, as every job: Prefer: respond-async, then the job holds the response object.
	key := s.newKey(nil).Key
	resp, b := s.do(http.MethodPost, "/v1/responses", key, map[string]any{"model": "claude-x", "input": prompt},
		"Prefer", "respond-async")
	var job jobObj
	if resp.StatusCode != http.StatusAccepted || json.Unmarshal(b, &job) != nil || resp.Header.Get("Sluice-Job-Id") != job.ID {
		t.Fatalf("async /v1/responses = %d %s", resp.StatusCode, b)
	}
	deadline := time.Now().Add(30 * time.Second)
	for job.Status != "succeeded" && time.Now().Before(deadline) {
		_, job = s.job(key, job.ID, "?wait=10s")
	}
	var body struct {
		Object string `json:"object"`
		Output []struct {
			Content []struct{ Text string } `json:"content"`
		} `json:"output"`
	}
	if job.Status != "succeeded" || job.Response == nil || json.Unmarshal(job.Response.Body, &body) != nil ||
		body.Object != "response" || len(body.Output) != 1 || body.Output[0].Content[0].Text != want {
		t.Fatalf("async job = %+v", job)
	}
	s.checkLedger(job.ID, int64(len(strings.Fields(prompt))+3), ct, 2, 8)
}

// weatherUpstream answers chat completions (at /v1/chat/completions) and Anthropic Messages
// (at /v1/messages) like a model with a weather tool: asked about the weather, it calls
// weather({"city":"Oslo"}); given the call's result, it answers in text. Whole or streamed.
// A request that carries the result under any other call id is a 400, so the test fails if
// the round trip loses it.
func weatherUpstream(t *testing.T) *httptest.Server {
	t.Helper()
	const answer = "It is 3 degrees in Oslo."
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Stream   bool `json:"stream"`
			Messages []struct {
				Role       string          `json:"role"`
				Content    json.RawMessage `json:"content"`
				ToolCallID string          `json:"tool_call_id"`
			} `json:"messages"`
			Tools []json.RawMessage `json:"tools"`
		}
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil || len(req.Messages) == 0 || len(req.Tools) != 1 {
			http.Error(w, `{"error":{"message":"want messages and one tool"}}`, http.StatusBadRequest)
			return
		}
		last := req.Messages[len(req.Messages)-1]
		anthropic := r.URL.Path == "/v1/messages"
		var result bool
		switch {
		case anthropic:
			var blocks []struct{ Type, ToolUseID, Text string }
			_ = json.Unmarshal(last.Content, &blocks)
			for _, b := range blocks {
				result = result || (b.Type == "tool_result" && strings.Contains(string(last.Content), `"tool_use_id":"call_w1"`))
			}
		default:
			result = last.Role == "tool" && last.ToolCallID == "call_w1" && strings.Contains(string(last.Content), "3")
		}
		if !result && (last.Role != "user" || strings.Contains(string(last.Content), "tool_result")) {
			http.Error(w, `{"error":{"message":"the tool result is missing or under another id"}}`, http.StatusBadRequest)
			return
		}
		writeWeather(w, anthropic, req.Stream, result, answer)
	}))
	t.Cleanup(srv.Close)
	return srv
}

// writeWeather writes weatherUpstream's answer: the tool call, or (after its result) text.
func writeWeather(w http.ResponseWriter, anthropic, stream, result bool, answer string) {
	const args = `{"city":"Oslo"}`
	if !stream {
		w.Header().Set("Content-Type", "application/json")
		var v any
		switch {
		case anthropic && result:
			v = map[string]any{"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-x", "stop_reason": "end_turn",
				"content": []any{map[string]any{"type": "text", "text": answer}}, "usage": map[string]int{"input_tokens": 11, "output_tokens": 7}}
		case anthropic:
			v = map[string]any{"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-x", "stop_reason": "tool_use",
				"content": []any{map[string]any{"type": "tool_use", "id": "call_w1", "name": "weather", "input": map[string]string{"city": "Oslo"}}},
				"usage":   map[string]int{"input_tokens": 11, "output_tokens": 7}}
		default:
			msg := map[string]any{"role": "assistant", "content": answer}
			finish := "stop"
			if !result {
				msg, finish = map[string]any{"role": "assistant", "content": nil, "tool_calls": []any{map[string]any{"id": "call_w1",
					"type": "function", "function": map[string]string{"name": "weather", "arguments": args}}}}, "tool_calls"
			}
			v = map[string]any{"id": "chatcmpl-1", "object": "chat.completion", "model": "gpt-x",
				"choices": []any{map[string]any{"index": 0, "message": msg, "finish_reason": finish}},
				"usage":   map[string]int{"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}}
		}
		_ = json.NewEncoder(w).Encode(v)
		return
	}
	w.Header().Set("Content-Type", "text/event-stream")
	send := func(name string, v any) {
		b, _ := json.Marshal(v)
		if name != "" {
			_, _ = w.Write([]byte("event: " + name + "\n"))
		}
		_, _ = w.Write([]byte("data: " + string(b) + "\n\n"))
	}
	if anthropic {
		send("message_start", map[string]any{"type": "message_start", "message": map[string]any{"id": "msg_1", "type": "message",
			"role": "assistant", "model": "claude-x", "content": []any{}, "usage": map[string]int{"input_tokens": 11, "output_tokens": 0}}})
		stop := "end_turn"
		if result {
			send("content_block_start", map[string]any{"type": "content_block_start", "index": 0, "content_block": map[string]string{"type": "text", "text": ""}})
			send("content_block_delta", map[string]any{"type": "content_block_delta", "index": 0, "delta": map[string]string{"type": "text_delta", "text": answer}})
		} else {
			stop = "tool_use"
			send("content_block_start", map[string]any{"type": "content_block_start", "index": 0,
				"content_block": map[string]any{"type": "tool_use", "id": "call_w1", "name": "weather", "input": map[string]any{}}})
			send("content_block_delta", map[string]any{"type": "content_block_delta", "index": 0, "delta": map[string]string{"type": "input_json_delta", "partial_json": `{"city":`}})
			send("content_block_delta", map[string]any{"type": "content_block_delta", "index": 0, "delta": map[string]string{"type": "input_json_delta", "partial_json": `"Oslo"}`}})
		}
		send("content_block_stop", map[string]any{"type": "content_block_stop", "index": 0})
		send("message_delta", map[string]any{"type": "message_delta", "delta": map[string]any{"stop_reason": stop}, "usage": map[string]int{"output_tokens": 7}})
		send("message_stop", map[string]any{"type": "message_stop"})
		return
	}
	chunk := func(delta map[string]any, finish any) map[string]any {
		return map[string]any{"id": "c1", "object": "chat.completion.chunk", "model": "gpt-x",
			"choices": []any{map[string]any{"index": 0, "delta": delta, "finish_reason": finish}}}
	}
	send("", chunk(map[string]any{"role": "assistant", "content": ""}, nil))
	if result {
		send("", chunk(map[string]any{"content": answer}, nil))
		send("", chunk(map[string]any{}, "stop"))
	} else {
		send("", chunk(map[string]any{"tool_calls": []any{map[string]any{"index": 0, "id": "call_w1", "type": "function",
			"function": map[string]string{"name": "weather", "arguments": ""}}}}, nil))
		send("", chunk(map[string]any{"tool_calls": []any{map[string]any{"index": 0, "function": map[string]string{"arguments": `{"city":`}}}}, nil))
		send("", chunk(map[string]any{"tool_calls": []any{map[string]any{"index": 0, "function": map[string]string{"arguments": `"Oslo"}`}}}}, nil))
		send("", chunk(map[string]any{}, "tool_calls"))
	}
	send("", map[string]any{"id": "c1", "object": "chat.completion.chunk", "model": "gpt-x", "choices": []any{},
		"usage": map[string]int{"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}})
	_, _ = w.Write([]byte("data: [DONE]\n\n"))
}

// TestResponsesFunctionCallRoundTrip_Issue11: on an OpenAI and an Anthropic channel, a
// Responses call with a function tool gets a function_call item (whole, and streamed as
// function_call_arguments events); sending it back with its function_call_output gets the
// model's answer, and the upstream saw the result under the call's id.
func TestResponsesFunctionCallRoundTrip_Issue11(t *testing.T) {
	t.Parallel()
	up := weatherUpstream(t)
	s, client, _ := responsesStack(t, nil)
	s.channel(map[string]any{"name": "gpt", "provider": "openai", "base_url": up.URL + "/v1", "models": []string{"gpt-x"}})
	s.channel(map[string]any{"name": "claude", "provider": "anthropic", "base_url": up.URL, "api_key": "sk-ant-test-123456",
		"models": []string{"claude-x"}})
	ctx := context.Background()
	question := responses.ResponseInputItemParamOfMessage("What is the weather in Oslo?", responses.EasyInputMessageRoleUser)
	tools := []responses.ToolUnionParam{responses.ToolParamOfFunction("weather",
		map[string]any{"type": "object", "properties": map[string]any{"city": map[string]string{"type": "string"}}}, false)}
	for _, model := range []string{"gpt-x", "claude-x"} {
		t.Run(model, func(t *testing.T) {
			params := responses.ResponseNewParams{Model: model, Tools: tools,
				Input: responses.ResponseNewParamsInputUnion{OfInputItemList: responses.ResponseInputParam{question}}}
			first, err := client.Responses.New(ctx, params)
			if err != nil {
				t.Fatalf("Responses.New: %v", err)
			}
			if len(first.Output) != 1 || first.Output[0].Type != "function_call" {
				t.Fatalf("first answer %s, want one function_call", first.RawJSON())
			}
			call := first.Output[0].AsFunctionCall()
			if call.CallID != "call_w1" || call.Name != "weather" || call.Arguments != `{"city":"Oslo"}` {
				t.Errorf("function call %+v", call)
			}

			stream := client.Responses.NewStreaming(ctx, params)
			var types []string
			var args string
			for stream.Next() {
				ev := stream.Current()
				if len(types) == 0 || types[len(types)-1] != ev.Type {
					types = append(types, ev.Type)
				}
				if ev.Type == "response.function_call_arguments.done" {
					args = ev.Arguments
				}
			}
			if err := stream.Err(); err != nil {
				t.Fatalf("stream: %v", err)
			}
			want := "response.created response.in_progress response.output_item.added response.function_call_arguments.delta " +
				"response.function_call_arguments.done response.output_item.done response.completed"
			if got := strings.Join(types, " "); got != want || args != `{"city":"Oslo"}` {
				t.Errorf("streamed call: %s (arguments %q), want %s", got, args, want)
			}

			output := responses.ResponseInputItemParamOfFunctionCallOutput(`{"temp_c":3}`)
			output.OfFunctionCallOutput.CallID = openai.String(call.CallID)
			params.Input.OfInputItemList = responses.ResponseInputParam{question,
				responses.ResponseInputItemParamOfFunctionCall(call.Arguments, call.CallID, call.Name), output}
			second, err := client.Responses.New(ctx, params)
			if err != nil {
				t.Fatalf("Responses.New with the result: %v", err)
			}
			if second.OutputText() != "It is 3 degrees in Oslo." || second.Usage.InputTokens != 11 || second.Usage.OutputTokens != 7 {
				t.Errorf("second answer %s", second.RawJSON())
			}
		})
	}
}

// TestResponsesCutStream_Issue11: an upstream stream cut midway (on a native, a chat and an
// Anthropic channel) ends the client's stream in response.failed, never response.completed,
// and the job is recorded as failed.
func TestResponsesCutStream_Issue11(t *testing.T) {
	t.Parallel()
	_, chatSrv := providertest.Start(t, providertest.Config{})
	_, nativeSrv := providertest.Start(t, providertest.Config{})
	s, client, _ := responsesStack(t, nativeSrv)
	s.channel(map[string]any{"name": "native", "provider": "openai", "base_url": nativeSrv.URL + "/v1", "models": []string{"gpt-native:midstream"}})
	s.channel(map[string]any{"name": "chat", "provider": "openai", "base_url": chatSrv.URL + "/v1", "models": []string{"gpt-chat:midstream"}})
	s.channel(map[string]any{"name": "claude", "provider": "anthropic", "base_url": chatSrv.URL, "api_key": "sk-ant-test-123456",
		"models": []string{"claude-x:midstream"}})
	var jobIDs []string
	for _, model := range []string{"gpt-native:midstream", "gpt-chat:midstream", "claude-x:midstream"} {
		t.Run(model, func(t *testing.T) {
			var raw *http.Response
			stream := client.Responses.NewStreaming(context.Background(), responses.ResponseNewParams{Model: model,
				Input: responses.ResponseNewParamsInputUnion{OfString: openai.String("one two three four five six seven eight nine ten")}},
				option.WithResponseInto(&raw))
			var events []responses.ResponseStreamEventUnion
			for stream.Next() {
				events = append(events, stream.Current())
			}
			if err := stream.Err(); err != nil {
				t.Fatalf("stream: %v", err)
			}
			if len(events) < 3 {
				t.Fatalf("%d events, want the start of the answer and response.failed", len(events))
			}
			last := events[len(events)-1]
			if last.Type != "response.failed" || last.SequenceNumber != int64(len(events)-1) ||
				last.Response.ID != events[0].Response.ID || last.Response.Status != responses.ResponseStatusFailed ||
				last.Response.Error.Message == "" {
				t.Errorf("last event %s, want response.failed for %s numbered %d", last.RawJSON(), events[0].Response.ID, len(events)-1)
			}
			for _, ev := range events {
				if ev.Type == "response.completed" || ev.Type == "response.incomplete" {
					t.Errorf("a cut stream sent %s", ev.Type)
				}
			}
			jobIDs = append(jobIDs, raw.Header.Get("Sluice-Job-Id"))
		})
	}
	s.settled()
	for _, id := range jobIDs {
		var status string
		if err := s.db.Pool.QueryRow(context.Background(), `SELECT status FROM jobs WHERE id = $1`, id).Scan(&status); err != nil ||
			status != "failed" {
			t.Errorf("job %s recorded %q (%v), want failed", id, status, err)
		}
	}
}

// TestResponsesRefusedEndToEnd_Issue11: what Sluice cannot honour is a 400 with a message
// naming it, never dropped: previous_response_id at the ingress, on any channel; a
// built-in tool on a translated channel (the worker refuses it before any upstream call).
// An upstream with the Responses API gets built-in tools passed through, and runs them.
func TestResponsesRefusedEndToEnd_Issue11(t *testing.T) {
	t.Parallel()
	chatUp, chatSrv := providertest.Start(t, providertest.Config{})
	nativeUp, nativeSrv := providertest.Start(t, providertest.Config{})
	s, _, k := responsesStack(t, nativeSrv)
	s.channel(map[string]any{"name": "native", "provider": "openai", "base_url": nativeSrv.URL + "/v1", "models": []string{"gpt-native"}})
	s.channel(map[string]any{"name": "claude", "provider": "anthropic", "base_url": chatSrv.URL, "api_key": "sk-ant-test-123456",
		"models": []string{"claude-x"}})
	search := []map[string]string{{"type": "web_search"}}
	tests := []struct {
		body         map[string]any
		status       int
		param, words string
	}{
		{map[string]any{"model": "claude-x", "input": "hi", "previous_response_id": "resp_1", "store": true}, 400, "previous_response_id", "keeps no responses"},
		{map[string]any{"model": "gpt-native", "input": "hi", "previous_response_id": "resp_1"}, 400, "previous_response_id", "keeps no responses"},
		{map[string]any{"model": "claude-x", "input": "hi", "tools": search}, 400, "", `built-in tool "web_search"`},
		{map[string]any{"model": "gpt-native", "input": "hi", "tools": search, "store": true}, 200, "", ""},
	}
	for _, tt := range tests {
		resp, b := s.do(http.MethodPost, "/v1/responses", k.Key, tt.body)
		var e struct {
			Error struct {
				Message string  `json:"message"`
				Param   *string `json:"param"`
			} `json:"error"`
		}
		_ = json.Unmarshal(b, &e)
		if resp.StatusCode != tt.status || !strings.Contains(e.Error.Message, tt.words) ||
			(tt.param != "" && (e.Error.Param == nil || *e.Error.Param != tt.param)) {
			t.Errorf("%v: %d %s, want %d naming %q", tt.body, resp.StatusCode, b, tt.status, tt.words)
		}
	}
	// Limits and budgets hold as for every job.
	limited := s.newKey(map[string]any{"name": "rpm", "rpm": 1})
	body := map[string]any{"model": "claude-x", "input": []map[string]any{{"role": "user", "content": "hi"}},
		"tools": search}
	if resp, b := s.do(http.MethodPost, "/v1/responses", limited.Key, body); resp.StatusCode != 400 {
		t.Errorf("first call of an rpm=1 key = %d %s, want the 400 of its built-in tool", resp.StatusCode, b)
	}
	if resp, b := s.do(http.MethodPost, "/v1/responses", limited.Key, body); resp.StatusCode != 429 || resp.Header.Get("Retry-After") == "" {
		t.Errorf("second call of an rpm=1 key = %d %s, want 429 with Retry-After", resp.StatusCode, b)
	}
	broke := s.newKey(map[string]any{"name": "broke", "budget_usd": 0})
	if resp, b := s.do(http.MethodPost, "/v1/responses", broke.Key, body); resp.StatusCode != 429 || !strings.Contains(string(b), "insufficient_quota") {
		t.Errorf("a spent key = %d %s, want 429 insufficient_quota", resp.StatusCode, b)
	}
	if n := chatUp.Stats().Requests; len(n) != 0 {
		t.Errorf("the translated channel's upstream was called: %v", n)
	}
	if st := nativeUp.Stats(); st.Succeeded != 1 {
		t.Errorf("the native upstream answered %d calls, want 1 (the built-in tool passed through)", st.Succeeded)
	}
}
