package providers

import (
	"encoding/json"
	"errors"
	"net/http"
	"reflect"
	"strings"
	"testing"

	"github.com/sluicehq/sluice/pkg/tokens"
)

// These tests check the translations between the chat completions, Messages and Gemini
// formats as pure functions; the adapter tests check them again over HTTP.

// normJSON decodes b into plain values, so that two encodings of the same JSON compare equal.
func normJSON(t *testing.T, b []byte) any {
	t.Helper()
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("not JSON: %v: %s", err, b)
	}
	return v
}

// sameJSON fails t unless got and want encode the same JSON value.
func sameJSON(t *testing.T, what string, got any, want string) {
	t.Helper()
	g, err := json.Marshal(got)
	if err != nil {
		t.Fatalf("%s: marshal: %v", what, err)
	}
	if !reflect.DeepEqual(normJSON(t, g), normJSON(t, []byte(want))) {
		t.Errorf("%s =\n%s\nwant\n%s", what, g, want)
	}
}

// wantInvalid checks that err is a 400 *Error whose message contains part and no prompt text.
func wantInvalid(t *testing.T, err error, part string) {
	t.Helper()
	e, ok := errors.AsType[*Error](err)
	if !ok || e.StatusCode != http.StatusBadRequest || e.Retryable() {
		t.Fatalf("error = %v, want a non-retryable 400 *Error", err)
	}
	if !strings.Contains(e.Message, part) {
		t.Errorf("error message %q does not mention %q", e.Message, part)
	}
	if strings.Contains(e.Error(), "secret prompt") {
		t.Errorf("error %q quotes the prompt", e.Error())
	}
}

func TestMessagesFromChat(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		chat string
		want string
	}{
		{
			name: "system, developer and text; max_tokens defaults",
			chat: `{"model":"claude","messages":[{"role":"system","content":"Be brief."},
				{"role":"developer","content":[{"type":"text","text":"No lists."}]},
				{"role":"user","content":"hi"},{"role":"assistant","content":"hello"},{"role":"user","content":"bye"}]}`,
			want: `{"model":"claude","max_tokens":4096,
				"system":[{"type":"text","text":"Be brief."},{"type":"text","text":"No lists."}],
				"messages":[{"role":"user","content":[{"type":"text","text":"hi"}]},
				{"role":"assistant","content":[{"type":"text","text":"hello"}]},
				{"role":"user","content":[{"type":"text","text":"bye"}]}]}`,
		},
		{
			name: "max_completion_tokens wins over max_tokens; sampling; stop string; user; stream",
			chat: `{"model":"m","max_tokens":10,"max_completion_tokens":20,"temperature":0.5,"top_p":0.9,"stop":"END",
				"user":"u-1","stream":true,"messages":[{"role":"user","content":"hi"}]}`,
			want: `{"model":"m","max_tokens":20,"temperature":0.5,"top_p":0.9,"stop_sequences":["END"],"stream":true,
				"metadata":{"user_id":"u-1"},"messages":[{"role":"user","content":[{"type":"text","text":"hi"}]}]}`,
		},
		{
			name: "nulls",
			chat: `{"model":"m","max_tokens":null,"stop":null,"temperature":null,"tool_choice":null,"messages":[{"role":"user","content":"hi"},{"role":"assistant","content":null}]}`,
			want: `{"model":"m","max_tokens":4096,"messages":[{"role":"user","content":[{"type":"text","text":"hi"}]}]}`,
		},
		{
			name: "max_tokens and stop list",
			chat: `{"model":"m","max_tokens":10,"stop":["a","b"],"messages":[{"role":"user","content":"hi"}]}`,
			want: `{"model":"m","max_tokens":10,"stop_sequences":["a","b"],"messages":[{"role":"user","content":[{"type":"text","text":"hi"}]}]}`,
		},
		{
			name: "images: data URL and https URL; empty text dropped",
			chat: `{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"what is this?"},{"type":"text","text":""},
				{"type":"image_url","image_url":{"url":"data:image/png;base64,iVBORw0KGgo="}},
				{"type":"image_url","image_url":{"url":"https://example.com/cat.jpg","detail":"low"}}]}]}`,
			want: `{"model":"m","max_tokens":4096,"messages":[{"role":"user","content":[{"type":"text","text":"what is this?"},
				{"type":"image","source":{"type":"base64","media_type":"image/png","data":"iVBORw0KGgo="}},
				{"type":"image","source":{"type":"url","url":"https://example.com/cat.jpg"}}]}]}`,
		},
		{
			name: "tool calls, then their results merged into one user turn with the next text",
			chat: `{"model":"m","messages":[{"role":"user","content":"weather in Paris and Rome?"},
				{"role":"assistant","content":null,"tool_calls":[
					{"id":"call_1","type":"function","function":{"name":"weather","arguments":"{\"city\": \"Paris\"}"}},
					{"id":"call_2","type":"function","function":{"name":"weather","arguments":""}}]},
				{"role":"tool","tool_call_id":"call_1","content":"sunny"},
				{"role":"tool","tool_call_id":"call_2","content":[{"type":"text","text":"rain"}]},
				{"role":"user","content":"thanks"}]}`,
			want: `{"model":"m","max_tokens":4096,"messages":[{"role":"user","content":[{"type":"text","text":"weather in Paris and Rome?"}]},
				{"role":"assistant","content":[
					{"type":"tool_use","id":"call_1","name":"weather","input":{"city":"Paris"}},
					{"type":"tool_use","id":"call_2","name":"weather","input":{}}]},
				{"role":"user","content":[
					{"type":"tool_result","tool_use_id":"call_1","content":[{"type":"text","text":"sunny"}]},
					{"type":"tool_result","tool_use_id":"call_2","content":[{"type":"text","text":"rain"}]},
					{"type":"text","text":"thanks"}]}]}`,
		},
		{
			name: "assistant text with a tool call; empty tool result",
			chat: `{"model":"m","messages":[{"role":"user","content":"go"},
				{"role":"assistant","content":"Let me look.","tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":"{}"}}]},
				{"role":"tool","tool_call_id":"c","content":""}]}`,
			want: `{"model":"m","max_tokens":4096,"messages":[{"role":"user","content":[{"type":"text","text":"go"}]},
				{"role":"assistant","content":[{"type":"text","text":"Let me look."},{"type":"tool_use","id":"c","name":"f","input":{}}]},
				{"role":"user","content":[{"type":"tool_result","tool_use_id":"c"}]}]}`,
		},
		{
			name: "tools; required; no parameters gets an empty object schema",
			chat: `{"model":"m","messages":[{"role":"user","content":"hi"}],"tool_choice":"required",
				"tools":[{"type":"function","function":{"name":"weather","description":"Weather now",
					"parameters":{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]}}},
					{"type":"function","function":{"name":"now"}}]}`,
			want: `{"model":"m","max_tokens":4096,"messages":[{"role":"user","content":[{"type":"text","text":"hi"}]}],
				"tools":[{"name":"weather","description":"Weather now",
					"input_schema":{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]}},
					{"name":"now","input_schema":{"type":"object","properties":{}}}],
				"tool_choice":{"type":"any"}}`,
		},
		{
			name: "named tool choice without parallel calls",
			chat: `{"model":"m","messages":[{"role":"user","content":"hi"}],"parallel_tool_calls":false,
				"tool_choice":{"type":"function","function":{"name":"now"}},"tools":[{"type":"function","function":{"name":"now"}}]}`,
			want: `{"model":"m","max_tokens":4096,"messages":[{"role":"user","content":[{"type":"text","text":"hi"}]}],
				"tools":[{"name":"now","input_schema":{"type":"object","properties":{}}}],
				"tool_choice":{"type":"tool","name":"now","disable_parallel_tool_use":true}}`,
		},
		{
			name: "no parallel calls alone; tool_choice without tools is dropped",
			chat: `{"model":"m","messages":[{"role":"user","content":"hi"}],"parallel_tool_calls":false,
				"tools":[{"type":"function","function":{"name":"now"}}]}`,
			want: `{"model":"m","max_tokens":4096,"messages":[{"role":"user","content":[{"type":"text","text":"hi"}]}],
				"tools":[{"name":"now","input_schema":{"type":"object","properties":{}}}],
				"tool_choice":{"type":"auto","disable_parallel_tool_use":true}}`,
		},
		{
			name: "legacy functions and function messages",
			chat: `{"model":"m","function_call":{"name":"now"},"functions":[{"name":"now","parameters":{"type":"object"}}],
				"messages":[{"role":"user","content":"time?"},
				{"role":"assistant","content":null,"function_call":{"name":"now","arguments":"{}"}},
				{"role":"function","name":"now","content":"noon"}]}`,
			want: `{"model":"m","max_tokens":4096,"messages":[{"role":"user","content":[{"type":"text","text":"time?"}]},
				{"role":"assistant","content":[{"type":"tool_use","id":"call_legacy_1","name":"now","input":{}}]},
				{"role":"user","content":[{"type":"tool_result","tool_use_id":"call_legacy_1","content":[{"type":"text","text":"noon"}]}]}],
				"tools":[{"name":"now","input_schema":{"type":"object"}}],"tool_choice":{"type":"tool","name":"now"}}`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := messagesFromChat("anthropic", []byte(tt.chat))
			if err != nil {
				t.Fatalf("messagesFromChat: %v", err)
			}
			sameJSON(t, "Messages request", got, tt.want)
		})
	}
}

func TestMessagesFromChatRejects(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		chat string
		part string // in the error message
	}{
		{"not JSON", `{"model":`, "not a valid chat completions request"},
		{"content of the wrong type", `{"model":"m","messages":[{"role":"user","content":7}]}`, "not a valid chat completions request"},
		{"n > 1", `{"model":"m","n":2,"messages":[{"role":"user","content":"secret prompt"}]}`, "n greater than 1"},
		{"audio part", `{"model":"m","messages":[{"role":"user","content":[{"type":"input_audio","input_audio":{}}]}]}`, `"input_audio"`},
		{"image without URL", `{"model":"m","messages":[{"role":"user","content":[{"type":"image_url"}]}]}`, "image_url is missing"},
		{"image by file path", `{"model":"m","messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"/etc/passwd"}}]}]}`, "data: URL"},
		{"arguments not an object", `{"model":"m","messages":[{"role":"user","content":"secret prompt"},
			{"role":"assistant","tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":"[secret prompt"}}]}]}`,
			"messages[1].tool_calls[0].function.arguments"},
		{"unknown role", `{"model":"m","messages":[{"role":"narrator","content":"secret prompt"}]}`, `role "narrator"`},
		{"image in system", `{"model":"m","messages":[{"role":"system","content":[{"type":"image_url","image_url":{"url":"https://x"}}]},{"role":"user","content":"hi"}]}`, "only text"},
		{"only a system message", `{"model":"m","messages":[{"role":"system","content":"secret prompt"}]}`, "at least one"},
		{"custom tool", `{"model":"m","messages":[{"role":"user","content":"hi"}],"tools":[{"type":"custom","custom":{"name":"x"}}]}`, `tool type "custom"`},
		{"unknown tool_choice", `{"model":"m","messages":[{"role":"user","content":"hi"}],"tool_choice":"sometimes","tools":[{"type":"function","function":{"name":"f"}}]}`, "tool_choice"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := messagesFromChat("anthropic", []byte(tt.chat))
			wantInvalid(t, err, tt.part)
		})
	}
}

func TestChatFromMessages(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name          string
		messages      string
		maxCompletion bool
		want          string
	}{
		{
			name: "system string, text, sampling, stop, user",
			messages: `{"model":"gpt","max_tokens":100,"system":"Be brief.","temperature":0.2,"top_p":0.8,"top_k":5,"stop_sequences":["END"],
				"metadata":{"user_id":"u-1"},"messages":[{"role":"user","content":"hi"},{"role":"assistant","content":"hello"}]}`,
			want: `{"model":"gpt","max_tokens":100,"temperature":0.2,"top_p":0.8,"stop":["END"],"user":"u-1",
				"messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"hi"},{"role":"assistant","content":"hello"}]}`,
		},
		{
			name:          "system blocks; max_completion_tokens; stream asks for usage",
			messages:      `{"model":"gpt","max_tokens":100,"stream":true,"system":[{"type":"text","text":"One."},{"type":"text","text":"Two."}],"messages":[{"role":"user","content":[{"type":"text","text":"hi"}]}]}`,
			maxCompletion: true,
			want: `{"model":"gpt","max_completion_tokens":100,"stream":true,"stream_options":{"include_usage":true},
				"messages":[{"role":"system","content":"One.\nTwo."},{"role":"user","content":"hi"}]}`,
		},
		{
			name: "images",
			messages: `{"model":"gpt","max_tokens":1,"messages":[{"role":"user","content":[{"type":"text","text":"what?"},
				{"type":"image","source":{"type":"base64","media_type":"image/png","data":"iVBORw0KGgo="}},
				{"type":"image","source":{"type":"url","url":"https://example.com/cat.jpg"}}]}]}`,
			want: `{"model":"gpt","max_tokens":1,"messages":[{"role":"user","content":[{"type":"text","text":"what?"},
				{"type":"image_url","image_url":{"url":"data:image/png;base64,iVBORw0KGgo="}},
				{"type":"image_url","image_url":{"url":"https://example.com/cat.jpg"}}]}]}`,
		},
		{
			name: "tool use and results; thinking dropped; images in a result follow as a user message",
			messages: `{"model":"gpt","max_tokens":1,"messages":[{"role":"user","content":"weather?"},
				{"role":"assistant","content":[{"type":"thinking","thinking":"hmm","signature":"s"},{"type":"text","text":"Looking."},
					{"type":"tool_use","id":"toolu_1","name":"weather","input":{"city":"Paris"}},
					{"type":"tool_use","id":"toolu_2","name":"map","input":{}}]},
				{"role":"user","content":[{"type":"tool_result","tool_use_id":"toolu_1","content":"sunny"},
					{"type":"tool_result","tool_use_id":"toolu_2","is_error":true,"content":[{"type":"text","text":"see"},
						{"type":"image","source":{"type":"base64","media_type":"image/gif","data":"R0lG"}}]},
					{"type":"text","text":"and?"}]}]}`,
			want: `{"model":"gpt","max_tokens":1,"messages":[{"role":"user","content":"weather?"},
				{"role":"assistant","content":"Looking.","tool_calls":[
					{"id":"toolu_1","type":"function","function":{"name":"weather","arguments":"{\"city\":\"Paris\"}"}},
					{"id":"toolu_2","type":"function","function":{"name":"map","arguments":"{}"}}]},
				{"role":"tool","tool_call_id":"toolu_1","content":"sunny"},
				{"role":"tool","tool_call_id":"toolu_2","content":"see"},
				{"role":"user","content":[{"type":"image_url","image_url":{"url":"data:image/gif;base64,R0lG"}},{"type":"text","text":"and?"}]}]}`,
		},
		{
			name: "tools and choices",
			messages: `{"model":"gpt","max_tokens":1,"messages":[{"role":"user","content":"hi"}],
				"tools":[{"name":"weather","description":"Now","input_schema":{"type":"object","properties":{"city":{"type":"string"}}}},
					{"type":"custom","name":"now","input_schema":{"type":"object"}}],
				"tool_choice":{"type":"tool","name":"now","disable_parallel_tool_use":true}}`,
			want: `{"model":"gpt","max_tokens":1,"messages":[{"role":"user","content":"hi"}],
				"tools":[{"type":"function","function":{"name":"weather","description":"Now","parameters":{"type":"object","properties":{"city":{"type":"string"}}}}},
					{"type":"function","function":{"name":"now","parameters":{"type":"object"}}}],
				"tool_choice":{"type":"function","function":{"name":"now"}},"parallel_tool_calls":false}`,
		},
		{
			name:     "tool choice any",
			messages: `{"model":"gpt","max_tokens":1,"messages":[{"role":"user","content":"hi"}],"tools":[{"name":"f","input_schema":{"type":"object"}}],"tool_choice":{"type":"any"}}`,
			want: `{"model":"gpt","max_tokens":1,"messages":[{"role":"user","content":"hi"}],
				"tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object"}}}],"tool_choice":"required"}`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := chatFromMessages("openai", []byte(tt.messages), tt.maxCompletion)
			if err != nil {
				t.Fatalf("chatFromMessages: %v", err)
			}
			sameJSON(t, "chat request", got, tt.want)
		})
	}
}

func TestChatFromMessagesRejects(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		messages string
		part     string
	}{
		{"not JSON", `[`, "not a valid Messages request"},
		{"document", `{"model":"m","max_tokens":1,"messages":[{"role":"user","content":[{"type":"document","source":{"type":"base64","media_type":"application/pdf","data":"JVBE"}}]}]}`, `"document"`},
		{"server tool", `{"model":"m","max_tokens":1,"messages":[{"role":"user","content":"hi"}],"tools":[{"type":"web_search_20250305","name":"web_search"}]}`, `"web_search_20250305"`},
		{"image system", `{"model":"m","max_tokens":1,"system":[{"type":"image"}],"messages":[{"role":"user","content":"secret prompt"}]}`, "system[0]"},
		{"file image", `{"model":"m","max_tokens":1,"messages":[{"role":"user","content":[{"type":"image","source":{"type":"file","file_id":"f"}}]}]}`, `"file"`},
		{"bad role", `{"model":"m","max_tokens":1,"messages":[{"role":"system","content":"secret prompt"}]}`, `role "system"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := chatFromMessages("openai", []byte(tt.messages), false)
			wantInvalid(t, err, tt.part)
		})
	}
}

// TestRequestRoundTrip translates a conversation with every translated feature to the other
// format and back, and expects what it started with.
func TestRequestRoundTrip(t *testing.T) {
	t.Parallel()
	t.Run("chat to Messages and back", func(t *testing.T) {
		t.Parallel()
		chat := `{"model":"m","max_tokens":300,"temperature":0.3,"top_p":0.9,"stop":["END"],"stream":true,
			"stream_options":{"include_usage":true},"user":"u",
			"messages":[{"role":"system","content":"Be brief."},
			{"role":"user","content":[{"type":"text","text":"what is in these?"},
				{"type":"image_url","image_url":{"url":"data:image/png;base64,iVBORw0KGgo="}},
				{"type":"image_url","image_url":{"url":"https://example.com/cat.jpg"}}]},
			{"role":"assistant","content":"Let me check.","tool_calls":[
				{"id":"call_1","type":"function","function":{"name":"vision","arguments":"{\"n\":1}"}},
				{"id":"call_2","type":"function","function":{"name":"vision","arguments":"{\"n\":2}"}}]},
			{"role":"tool","tool_call_id":"call_1","content":"a cat"},
			{"role":"tool","tool_call_id":"call_2","content":"a dog"},
			{"role":"user","content":"thanks"},
			{"role":"assistant","content":"You are welcome."}],
			"tools":[{"type":"function","function":{"name":"vision","description":"Looks","parameters":{"type":"object","properties":{"n":{"type":"integer"}}}}}],
			"tool_choice":{"type":"function","function":{"name":"vision"}},"parallel_tool_calls":false}`
		mr, err := messagesFromChat("anthropic", []byte(chat))
		if err != nil {
			t.Fatal(err)
		}
		back, err := chatFromMessages("openai", mustMarshal(mr), false)
		if err != nil {
			t.Fatal(err)
		}
		sameJSON(t, "chat request after the round trip", back, chat)
	})
	t.Run("Messages to chat and back", func(t *testing.T) {
		t.Parallel()
		messages := `{"model":"m","max_tokens":300,"temperature":0.3,"stop_sequences":["END"],"stream":true,
			"metadata":{"user_id":"u"},"system":[{"type":"text","text":"Be brief."}],
			"messages":[{"role":"user","content":[{"type":"text","text":"what is this?"},
				{"type":"image","source":{"type":"base64","media_type":"image/png","data":"iVBORw0KGgo="}}]},
			{"role":"assistant","content":[{"type":"text","text":"Checking."},
				{"type":"tool_use","id":"toolu_1","name":"vision","input":{"n":1}}]},
			{"role":"user","content":[{"type":"tool_result","tool_use_id":"toolu_1","content":[{"type":"text","text":"a cat"}]},
				{"type":"text","text":"thanks"}]}],
			"tools":[{"name":"vision","input_schema":{"type":"object"}}],"tool_choice":{"type":"any"}}`
		cr, err := chatFromMessages("openai", []byte(messages), false)
		if err != nil {
			t.Fatal(err)
		}
		back, err := messagesFromChat("anthropic", mustMarshal(cr))
		if err != nil {
			t.Fatal(err)
		}
		sameJSON(t, "Messages request after the round trip", back, messages)
	})
}

func TestChatFromMessage(t *testing.T) {
	t.Parallel()
	msg := `{"id":"msg_1","type":"message","role":"assistant","model":"claude",
		"content":[{"type":"thinking","thinking":"hmm"},{"type":"text","text":"Looking "},{"type":"text","text":"it up."},
			{"type":"tool_use","id":"toolu_1","name":"weather","input":{ "city" : "Paris" }}],
		"stop_reason":"tool_use","stop_sequence":null,
		"usage":{"input_tokens":10,"output_tokens":5,"cache_creation_input_tokens":2,"cache_read_input_tokens":3}}`
	var m anthResponse
	if err := json.Unmarshal([]byte(msg), &m); err != nil {
		t.Fatal(err)
	}
	sameJSON(t, "chat completion", chatFromMessage(&m, 1700000000), `{"id":"msg_1","object":"chat.completion","created":1700000000,
		"model":"claude","choices":[{"index":0,"finish_reason":"tool_calls","message":{"role":"assistant","content":"Looking it up.",
			"tool_calls":[{"id":"toolu_1","type":"function","function":{"name":"weather","arguments":"{\"city\":\"Paris\"}"}}]}}],
		"usage":{"prompt_tokens":15,"completion_tokens":5,"total_tokens":20,"prompt_tokens_details":{"cached_tokens":3}}}`)
	if got, want := *m.Usage.total(), (tokens.Usage{PromptTokens: 15, CompletionTokens: 5}); got != want {
		t.Errorf("usage = %+v, want %+v", got, want)
	}

	t.Run("tool calls only: content null", func(t *testing.T) {
		t.Parallel()
		m := anthResponse{Content: anthContent{{Type: "tool_use", ID: "t", Name: "f"}}}
		c := chatFromMessage(&m, 0)
		if c.Choices[0].Message.Content != nil || c.Choices[0].Message.ToolCalls[0].Function.Arguments != "{}" {
			t.Errorf("message = %s, want null content and {} arguments", mustMarshal(c.Choices[0].Message))
		}
	})
}

func TestStopReasons(t *testing.T) {
	t.Parallel()
	tests := []struct {
		stop, finish string
		back         string // the stop reason the finish reason maps back to
	}{
		{stopEndTurn, finishStop, stopEndTurn},
		{stopSequence, finishStop, stopEndTurn},
		{stopPauseTurn, finishStop, stopEndTurn},
		{stopMaxTokens, finishLength, stopMaxTokens},
		{stopContextLimit, finishLength, stopMaxTokens},
		{stopToolUse, finishToolCalls, stopToolUse},
		{stopRefusal, finishContentFilter, stopRefusal},
		{"", finishStop, stopEndTurn},
	}
	for _, tt := range tests {
		t.Run(tt.stop, func(t *testing.T) {
			t.Parallel()
			if got := finishFromStop(tt.stop); got != tt.finish {
				t.Errorf("finishFromStop(%q) = %q, want %q", tt.stop, got, tt.finish)
			}
			if got := stopFromFinish(tt.finish); got != tt.back {
				t.Errorf("stopFromFinish(%q) = %q, want %q", tt.finish, got, tt.back)
			}
		})
	}
	if got := stopFromFinish("function_call"); got != stopToolUse {
		t.Errorf("stopFromFinish(function_call) = %q, want tool_use", got)
	}
}

func TestMessageFromChat(t *testing.T) {
	t.Parallel()
	chat := `{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"gpt",
		"choices":[{"index":0,"finish_reason":"tool_calls","message":{"role":"assistant","content":"Looking.",
			"tool_calls":[{"id":"call_1","type":"function","function":{"name":"weather","arguments":"{\"city\": \"Paris\"}"}},
				{"id":"call_2","type":"function","function":{"name":"now","arguments":""}}]}}],
		"usage":{"prompt_tokens":20,"completion_tokens":7,"total_tokens":27,"prompt_tokens_details":{"cached_tokens":4}}}`
	var c chatCompletion
	if err := json.Unmarshal([]byte(chat), &c); err != nil {
		t.Fatal(err)
	}
	m, err := messageFromChat("openai", &c)
	if err != nil {
		t.Fatal(err)
	}
	sameJSON(t, "message", m, `{"id":"msg_chatcmpl-1","type":"message","role":"assistant","model":"gpt",
		"content":[{"type":"text","text":"Looking."},
			{"type":"tool_use","id":"call_1","name":"weather","input":{"city":"Paris"}},
			{"type":"tool_use","id":"call_2","name":"now","input":{}}],
		"stop_reason":"tool_use","stop_sequence":null,
		"usage":{"input_tokens":16,"output_tokens":7,"cache_read_input_tokens":4}}`)

	bad := []struct{ name, chat string }{
		{"no choices", `{"id":"x","choices":[]}`},
		{"arguments not an object", `{"id":"x","choices":[{"message":{"role":"assistant","tool_calls":[{"id":"c","function":{"name":"f","arguments":"[1]"}}]}}]}`},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var c chatCompletion
			if err := json.Unmarshal([]byte(tt.chat), &c); err != nil {
				t.Fatal(err)
			}
			if _, err := messageFromChat("openai", &c); !errors.Is(err, ErrBadResponse) {
				t.Errorf("messageFromChat error = %v, want ErrBadResponse", err)
			}
		})
	}
}

// TestAnswerRoundTrip translates a Messages answer to a chat completion and back.
func TestAnswerRoundTrip(t *testing.T) {
	t.Parallel()
	for _, stop := range []string{stopEndTurn, stopMaxTokens, stopToolUse, stopRefusal} {
		t.Run(stop, func(t *testing.T) {
			t.Parallel()
			want := anthResponse{ID: "msg_1", Type: "message", Role: "assistant", Model: "claude", StopReason: &stop,
				Content: anthContent{{Type: "text", Text: "Sure."}, {Type: "tool_use", ID: "toolu_1", Name: "f", Input: json.RawMessage(`{"a":[1,2]}`)}},
				Usage:   anthUsage{InputTokens: 9, OutputTokens: 4, CacheReadInputTokens: 2}}
			var c chatCompletion
			if err := json.Unmarshal(mustMarshal(chatFromMessage(&want, 5)), &c); err != nil {
				t.Fatal(err)
			}
			got, err := messageFromChat("openai", &c)
			if err != nil {
				t.Fatal(err)
			}
			sameJSON(t, "message after the round trip", got, string(mustMarshal(want)))
		})
	}
}

// anthStream is a Messages stream with text, two tool calls with their input in pieces,
// and the events a translation must skip (ping, thinking).
var anthStream = []string{
	`{"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","model":"claude","content":[],
		"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":25,"output_tokens":1,"cache_read_input_tokens":5}}}`,
	`{"type":"ping"}`,
	`{"type":"content_block_start","index":0,"content_block":{"type":"thinking","thinking":""}}`,
	`{"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"Let me think"}}`,
	`{"type":"content_block_delta","index":0,"delta":{"type":"signature_delta","signature":"sig"}}`,
	`{"type":"content_block_stop","index":0}`,
	`{"type":"content_block_start","index":1,"content_block":{"type":"text","text":""}}`,
	`{"type":"content_block_delta","index":1,"delta":{"type":"text_delta","text":"Checking "}}`,
	`{"type":"content_block_delta","index":1,"delta":{"type":"text_delta","text":"both."}}`,
	`{"type":"content_block_stop","index":1}`,
	`{"type":"content_block_start","index":2,"content_block":{"type":"tool_use","id":"toolu_1","name":"weather","input":{}}}`,
	`{"type":"content_block_delta","index":2,"delta":{"type":"input_json_delta","partial_json":""}}`,
	`{"type":"content_block_delta","index":2,"delta":{"type":"input_json_delta","partial_json":"{\"city\": \"Pa"}}`,
	`{"type":"content_block_delta","index":2,"delta":{"type":"input_json_delta","partial_json":"ris\"}"}}`,
	`{"type":"content_block_stop","index":2}`,
	`{"type":"content_block_start","index":3,"content_block":{"type":"tool_use","id":"toolu_2","name":"weather","input":{}}}`,
	`{"type":"content_block_delta","index":3,"delta":{"type":"input_json_delta","partial_json":"{\"city\":\"Rome\"}"}}`,
	`{"type":"content_block_stop","index":3}`,
	`{"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},"usage":{"output_tokens":40}}`,
	`{"type":"message_stop"}`,
}

// anthWhole is anthStream as one answer.
const anthWhole = `{"id":"msg_1","type":"message","role":"assistant","model":"claude","stop_reason":"tool_use","stop_sequence":null,
	"content":[{"type":"text","text":"Checking both."},
		{"type":"tool_use","id":"toolu_1","name":"weather","input":{"city":"Paris"}},
		{"type":"tool_use","id":"toolu_2","name":"weather","input":{"city":"Rome"}}],
	"usage":{"input_tokens":25,"output_tokens":40,"cache_read_input_tokens":5}}`

// chatAccumulation is what a chat client builds from a stream.
type chatAccumulation struct {
	ID, Model string
	Role      string
	Content   string
	Calls     []chatToolCall
	Finish    string
	Usage     *chatUsage
}

// accumulateChat joins chunks as the OpenAI SDKs do: content concatenated, tool calls by
// index (id, type and name from their first piece, arguments concatenated).
func accumulateChat(t *testing.T, chunks [][]byte) chatAccumulation {
	t.Helper()
	var a chatAccumulation
	for i, b := range chunks {
		var c chatCompletion
		if err := json.Unmarshal(b, &c); err != nil || c.Object != "chat.completion.chunk" {
			t.Fatalf("chunk %d is not a chat.completion.chunk: %s (%v)", i, b, err)
		}
		a.ID, a.Model = c.ID, c.Model
		if c.Usage != nil {
			a.Usage = c.Usage
		}
		for _, ch := range c.Choices {
			if ch.FinishReason != nil {
				a.Finish = *ch.FinishReason
			}
			if ch.Delta == nil {
				t.Fatalf("chunk %d has a choice without a delta: %s", i, b)
			}
			a.Role += ch.Delta.Role
			a.Content += deref(ch.Delta.Content)
			for _, tc := range ch.Delta.ToolCalls {
				switch {
				case tc.Index == len(a.Calls):
					a.Calls = append(a.Calls, chatToolCall{ID: tc.ID, Type: tc.Type, Function: chatFunctionCall{Name: tc.Function.Name}})
				case tc.Index > len(a.Calls):
					t.Fatalf("chunk %d skips to tool call %d", i, tc.Index)
				}
				a.Calls[tc.Index].Function.Arguments += tc.Function.Arguments
			}
		}
	}
	return a
}

// accumulation of a whole chat completion, for comparing with a stream's.
func chatAccumulationOf(c *chatCompletion) chatAccumulation {
	m := c.Choices[0].Message
	calls := m.ToolCalls
	for i := range calls {
		calls[i].Function.Arguments = compactArgs(json.RawMessage(calls[i].Function.Arguments))
	}
	return chatAccumulation{ID: c.ID, Model: c.Model, Role: m.Role, Content: deref(m.Content), Calls: calls,
		Finish: deref(c.Choices[0].FinishReason), Usage: c.Usage}
}

func TestChunksFromEvents(t *testing.T) {
	t.Parallel()
	for _, wantUsage := range []bool{false, true} {
		t.Run(map[bool]string{false: "without usage chunk", true: "with usage chunk"}[wantUsage], func(t *testing.T) {
			t.Parallel()
			tr := newChunksFromEvents("anthropic", 7, wantUsage)
			var chunks [][]byte
			for i, ev := range anthStream {
				out, done, err := tr.event([]byte(ev))
				if err != nil {
					t.Fatalf("event %d: %v", i, err)
				}
				if done != (i == len(anthStream)-1) {
					t.Fatalf("event %d: done = %v", i, done)
				}
				chunks = append(chunks, out...)
			}
			got := accumulateChat(t, chunks)
			for i := range got.Calls {
				got.Calls[i].Function.Arguments = compactArgs(json.RawMessage(got.Calls[i].Function.Arguments))
			}
			var whole anthResponse
			if err := json.Unmarshal([]byte(anthWhole), &whole); err != nil {
				t.Fatal(err)
			}
			want := chatAccumulationOf(chatFromMessage(&whole, 7))
			if !wantUsage {
				want.Usage = nil
			}
			sameJSON(t, "accumulated stream", got, string(mustMarshal(want)))
			if u := tr.usage.result(); u == nil || *u != (tokens.Usage{PromptTokens: 30, CompletionTokens: 40}) {
				t.Errorf("usage = %+v, want 30 prompt, 40 completion", u)
			}
		})
	}
}

func TestChunksFromEventsUsageSoFar(t *testing.T) {
	t.Parallel()
	tr := newChunksFromEvents("anthropic", 0, false)
	if tr.usage.result() != nil {
		t.Errorf("usage before message_start = %+v, want nil", tr.usage.result())
	}
	if _, _, err := tr.event([]byte(anthStream[0])); err != nil {
		t.Fatal(err)
	}
	if u := tr.usage.result(); u == nil || *u != (tokens.Usage{PromptTokens: 30, CompletionTokens: 1}) {
		t.Errorf("usage after message_start = %+v, want 30 prompt, 1 completion", u)
	}
	// Newer API versions repeat the input counts in message_delta.
	if _, _, err := tr.event([]byte(`{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"input_tokens":26,"output_tokens":9}}`)); err != nil {
		t.Fatal(err)
	}
	if u := tr.usage.result(); u == nil || *u != (tokens.Usage{PromptTokens: 26, CompletionTokens: 9}) {
		t.Errorf("usage after message_delta = %+v, want 26 prompt, 9 completion", u)
	}
}

func TestChunksFromEventsErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		event     string
		status    int
		retryable bool
		bad       bool // ErrBadResponse
	}{
		{"overloaded", `{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}`, 529, true, false},
		{"rate limited", `{"type":"error","error":{"type":"rate_limit_error","message":"slow down"}}`, 429, true, false},
		{"invalid", `{"type":"error","error":{"type":"invalid_request_error","message":"no"}}`, 400, false, false},
		{"unknown", `{"type":"error","error":{"type":"teapot","message":"?"}}`, 502, true, false},
		{"not JSON", `{"type":`, 0, false, true},
		{"start without message", `{"type":"message_start"}`, 0, false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, _, err := newChunksFromEvents("anthropic", 0, false).event([]byte(tt.event))
			e, ok := errors.AsType[*Error](err)
			if !ok || e.StatusCode != tt.status || e.Retryable() != tt.retryable || errors.Is(err, ErrBadResponse) != tt.bad {
				t.Errorf("error = %v, want status %d, retryable %v, bad response %v", err, tt.status, tt.retryable, tt.bad)
			}
		})
	}
}

// chatStream is a chat.completion.chunk stream with text, two tool calls with their
// arguments in pieces, a finish, a usage chunk and [DONE].
var chatStream = []string{
	`{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"gpt","choices":[{"index":0,"delta":{"role":"assistant","content":"","refusal":null},"finish_reason":null}]}`,
	`{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"gpt","choices":[{"index":0,"delta":{"content":"Checking "},"finish_reason":null}]}`,
	`{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"gpt","choices":[{"index":0,"delta":{"content":"both."},"finish_reason":null}]}`,
	`{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"gpt","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"name":"weather","arguments":""}}]},"finish_reason":null}]}`,
	`{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"gpt","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"city\":"}}]},"finish_reason":null}]}`,
	`{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"gpt","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"\"Paris\"}"}}]},"finish_reason":null}]}`,
	`{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"gpt","choices":[{"index":0,"delta":{"tool_calls":[{"index":1,"id":"call_2","type":"function","function":{"name":"weather","arguments":"{\"city\":\"Rome\"}"}}]},"finish_reason":null}]}`,
	`{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"gpt","choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}`,
	`{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"gpt","choices":[],"usage":{"prompt_tokens":30,"completion_tokens":40,"total_tokens":70,"prompt_tokens_details":{"cached_tokens":5}}}`,
	`[DONE]`,
}

// chatWhole is chatStream as one answer.
const chatWhole = `{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"gpt",
	"choices":[{"index":0,"finish_reason":"tool_calls","message":{"role":"assistant","content":"Checking both.","tool_calls":[
		{"id":"call_1","type":"function","function":{"name":"weather","arguments":"{\"city\":\"Paris\"}"}},
		{"id":"call_2","type":"function","function":{"name":"weather","arguments":"{\"city\":\"Rome\"}"}}]}}],
	"usage":{"prompt_tokens":30,"completion_tokens":40,"total_tokens":70,"prompt_tokens_details":{"cached_tokens":5}}}`

// accumulateMessages joins a Messages stream as the Anthropic SDKs do, checking the order
// of its events: blocks by index, text and partial JSON concatenated, the stop reason and
// output usage from message_delta.
func accumulateMessages(t *testing.T, events []Event) anthResponse {
	t.Helper()
	var m anthResponse
	partial := map[int]string{}
	open := -1
	for i, ev := range events {
		var e anthEvent
		if err := json.Unmarshal(ev.Data, &e); err != nil || e.Type != ev.Name {
			t.Fatalf("event %d (%s) is not a %s event: %s (%v)", i, ev.Name, ev.Name, ev.Data, err)
		}
		switch e.Type {
		case "message_start":
			if i != 0 {
				t.Fatalf("message_start is event %d", i)
			}
			m = *e.Message
		case "content_block_start":
			if open >= 0 || e.Index != len(m.Content) {
				t.Fatalf("event %d starts block %d with block %d open and %d blocks", i, e.Index, open, len(m.Content))
			}
			open = e.Index
			m.Content = append(m.Content, *e.ContentBlock)
		case "content_block_delta":
			if e.Index != open {
				t.Fatalf("event %d adds to block %d while block %d is open", i, e.Index, open)
			}
			m.Content[e.Index].Text += e.Delta.Text
			partial[e.Index] += e.Delta.PartialJSON
		case "content_block_stop":
			if e.Index != open {
				t.Fatalf("event %d stops block %d while block %d is open", i, e.Index, open)
			}
			if s, ok := partial[e.Index]; ok && m.Content[e.Index].Type == "tool_use" {
				m.Content[e.Index].Input = json.RawMessage(s)
			}
			open = -1
		case "message_delta":
			m.StopReason, m.StopSequence = e.Delta.StopReason, e.Delta.StopSequence
			m.Usage.OutputTokens = e.Usage.OutputTokens
			if e.Usage.InputTokens > 0 || e.Usage.CacheReadInputTokens > 0 {
				m.Usage.InputTokens, m.Usage.CacheReadInputTokens = e.Usage.InputTokens, e.Usage.CacheReadInputTokens
			}
		case "message_stop":
			if i != len(events)-1 {
				t.Fatalf("message_stop is event %d of %d", i, len(events))
			}
		}
	}
	for i, b := range m.Content {
		if b.Type == "tool_use" {
			m.Content[i].Input = json.RawMessage(compactArgs(b.Input))
		}
	}
	return m
}

func TestEventsFromChunks(t *testing.T) {
	t.Parallel()
	tr := newEventsFromChunks("openai")
	var events []Event
	for i, c := range chatStream {
		out, done, err := tr.chunk([]byte(c))
		if err != nil {
			t.Fatalf("chunk %d: %v", i, err)
		}
		if done != (i == len(chatStream)-1) {
			t.Fatalf("chunk %d: done = %v", i, done)
		}
		events = append(events, out...)
	}
	got := accumulateMessages(t, events)
	var whole chatCompletion
	if err := json.Unmarshal([]byte(chatWhole), &whole); err != nil {
		t.Fatal(err)
	}
	want, err := messageFromChat("openai", &whole)
	if err != nil {
		t.Fatal(err)
	}
	sameJSON(t, "accumulated stream", got, string(mustMarshal(want)))
	if u := tr.result(); u == nil || *u != (tokens.Usage{PromptTokens: 30, CompletionTokens: 40}) {
		t.Errorf("usage = %+v, want 30 prompt, 40 completion", u)
	}

	t.Run("empty stream", func(t *testing.T) {
		t.Parallel()
		events, done, err := newEventsFromChunks("openai").chunk([]byte("[DONE]"))
		if err != nil || !done {
			t.Fatalf("chunk([DONE]) = done %v, error %v", done, err)
		}
		var names []string
		for _, e := range events {
			names = append(names, e.Name)
		}
		if got := strings.Join(names, ","); got != "message_start,message_delta,message_stop" {
			t.Errorf("events = %s, want message_start,message_delta,message_stop", got)
		}
	})
	t.Run("tool call without id and text after a tool call", func(t *testing.T) {
		t.Parallel()
		tr := newEventsFromChunks("openai")
		var events []Event
		for _, c := range []string{
			`{"id":"","object":"","created":0,"model":"","choices":[],"prompt_filter_results":[{"prompt_index":0,"content_filter_results":{}}]}`,
			`{"id":"x","model":"m","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"name":"f","arguments":"{}"}}]}}]}`,
			`{"id":"x","model":"m","choices":[{"index":0,"delta":{"content":"done"},"finish_reason":"stop"}]}`,
			`[DONE]`,
		} {
			out, _, err := tr.chunk([]byte(c))
			if err != nil {
				t.Fatal(err)
			}
			events = append(events, out...)
		}
		sameJSON(t, "message", accumulateMessages(t, events), `{"id":"msg_x","type":"message","role":"assistant","model":"m",
			"content":[{"type":"tool_use","id":"call_0","name":"f","input":{}},{"type":"text","text":"done"}],
			"stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":0,"output_tokens":0}}`)
	})
	t.Run("error chunk", func(t *testing.T) {
		t.Parallel()
		_, _, err := newEventsFromChunks("openai").chunk([]byte(`{"error":{"message":"boom","type":"server_error"}}`))
		if e, ok := errors.AsType[*Error](err); !ok || e.StatusCode != http.StatusBadGateway || e.Message != "boom" {
			t.Errorf("error = %v, want a 502 *Error with the upstream's message", err)
		}
		_, _, err = newEventsFromChunks("openai").chunk([]byte(`{"choices":`))
		if !errors.Is(err, ErrBadResponse) {
			t.Errorf("error = %v, want ErrBadResponse", err)
		}
	})
}

// TestStreamRoundTrip translates a Messages stream into chat chunks and those back into a
// Messages stream: a Messages client then sees the answer it would have got whole.
func TestStreamRoundTrip(t *testing.T) {
	t.Parallel()
	toChat := newChunksFromEvents("anthropic", 1, true)
	toMessages := newEventsFromChunks("openai")
	var events []Event
	for i, ev := range anthStream {
		chunks, done, err := toChat.event([]byte(ev))
		if err != nil {
			t.Fatalf("event %d: %v", i, err)
		}
		if done {
			chunks = append(chunks, []byte("[DONE]"))
		}
		for _, c := range chunks {
			out, _, err := toMessages.chunk(c)
			if err != nil {
				t.Fatalf("chunk %s: %v", c, err)
			}
			events = append(events, out...)
		}
	}
	var want anthResponse
	if err := json.Unmarshal([]byte(anthWhole), &want); err != nil {
		t.Fatal(err)
	}
	want.ID = "msg_1" // already a message id: kept
	sameJSON(t, "message after the round trip", accumulateMessages(t, events), string(mustMarshal(want)))
}

func TestDataURL(t *testing.T) {
	t.Parallel()
	tests := []struct {
		url, mediaType, data string
		ok                   bool
	}{
		{"data:image/png;base64,AAAA", "image/png", "AAAA", true},
		{"data:image/png,AAAA", "", "", false},
		{"data:;base64,AAAA", "", "", false},
		{"data:image/png;base64", "", "", false},
		{"https://x/y.png", "", "", false},
	}
	for _, tt := range tests {
		mt, data, ok := parseDataURL(tt.url)
		if mt != tt.mediaType || data != tt.data || ok != tt.ok {
			t.Errorf("parseDataURL(%q) = %q, %q, %v; want %q, %q, %v", tt.url, mt, data, ok, tt.mediaType, tt.data, tt.ok)
		}
		if ok && dataURL(mt, data) != tt.url {
			t.Errorf("dataURL(%q, %q) = %q, want %q", mt, data, dataURL(mt, data), tt.url)
		}
	}
}
