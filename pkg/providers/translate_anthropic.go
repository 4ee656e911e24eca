package providers

import (
	"cmp"
	"encoding/json"
	"fmt"
	"strings"
)

// Translations between the OpenAI chat completions format and the Anthropic Messages format,
// in both directions: the anthropic adapter serves chat clients with those in this file, and
// the openai adapter serves Messages clients with those in translate_messages.go. Each
// direction has a request, a whole-answer and a stream translation.
//
// Errors that are the client's (a request the other API cannot express) are *Error with
// status 400; an upstream answer that does not parse is ErrBadResponse. Neither kind of
// error message quotes request or answer content.

// defaultMaxTokens is the max_tokens sent to Anthropic, which requires one, when a chat
// client set none.
const defaultMaxTokens = 4096

// ---- chat completions request → Messages request (anthropic adapter) ----

// messagesFromChat translates a chat completions request body into a Messages request.
func messagesFromChat(provider string, body []byte) (*messagesRequest, error) {
	var in chatRequest
	if err := json.Unmarshal(body, &in); err != nil {
		return nil, invalidRequest(provider, "body is not a valid chat completions request: %v", err)
	}
	if in.N != nil && *in.N > 1 {
		return nil, invalidRequest(provider, "n greater than 1 is not supported by %s", provider)
	}
	out := &messagesRequest{
		Model:         in.Model,
		MaxTokens:     cmp.Or(deref(in.MaxCompletionTokens), deref(in.MaxTokens), defaultMaxTokens),
		Temperature:   in.Temperature,
		TopP:          in.TopP,
		StopSequences: in.Stop,
		Stream:        in.Stream,
	}
	if in.User != "" {
		out.Metadata = &anthMetadata{UserID: in.User}
	}
	legacyCall := "" // the id given to the last legacy function_call, for the "function" reply
	for i, m := range in.Messages {
		switch m.Role {
		case "system", "developer":
			for _, p := range m.Content {
				if p.Type != "text" {
					return nil, invalidRequest(provider, "messages[%d]: a %s message may hold only text", i, m.Role)
				}
				if p.Text != "" {
					out.System = append(out.System, anthBlock{Type: "text", Text: p.Text})
				}
			}
		case "user":
			blocks, err := blocksFromParts(provider, i, m.Content)
			if err != nil {
				return nil, err
			}
			out.Messages = appendTurn(out.Messages, "user", blocks)
		case "assistant":
			var blocks anthContent
			if t := m.Content.text(); t != "" {
				blocks = append(blocks, anthBlock{Type: "text", Text: t})
			}
			for j, tc := range m.ToolCalls {
				input, err := toolInput(tc.Function.Arguments)
				if err != nil {
					return nil, invalidRequest(provider, "messages[%d].tool_calls[%d].function.arguments: %v", i, j, err)
				}
				blocks = append(blocks, anthBlock{Type: "tool_use", ID: tc.ID, Name: tc.Function.Name, Input: input})
			}
			if fc := m.FunctionCall; fc != nil {
				input, err := toolInput(fc.Arguments)
				if err != nil {
					return nil, invalidRequest(provider, "messages[%d].function_call.arguments: %v", i, err)
				}
				legacyCall = fmt.Sprintf("call_legacy_%d", i)
				blocks = append(blocks, anthBlock{Type: "tool_use", ID: legacyCall, Name: fc.Name, Input: input})
			}
			out.Messages = appendTurn(out.Messages, "assistant", blocks)
		case "tool", "function":
			id := m.ToolCallID
			if m.Role == "function" {
				id = legacyCall
			}
			res := anthBlock{Type: "tool_result", ToolUseID: id}
			if t := m.Content.text(); t != "" {
				res.Content = anthContent{{Type: "text", Text: t}}
			}
			out.Messages = appendTurn(out.Messages, "user", anthContent{res})
		default:
			return nil, invalidRequest(provider, "messages[%d]: role %q is not supported", i, m.Role)
		}
	}
	if len(out.Messages) == 0 {
		return nil, invalidRequest(provider, "messages: at least one user or assistant message is required")
	}

	tools, choice, err := anthToolsFromChat(provider, &in)
	if err != nil {
		return nil, err
	}
	out.Tools, out.ToolChoice = tools, choice
	return out, nil
}

// anthToolsFromChat translates tools (and legacy functions), tool_choice and
// parallel_tool_calls. A choice without tools is dropped: Anthropic rejects it.
func anthToolsFromChat(provider string, in *chatRequest) ([]anthTool, *anthToolChoice, error) {
	funcs := make([]chatFunction, 0, len(in.Tools)+len(in.Functions))
	for i, t := range in.Tools {
		if t.Type != "function" && t.Type != "" {
			return nil, nil, invalidRequest(provider, "tools[%d]: tool type %q is not supported by %s", i, t.Type, provider)
		}
		funcs = append(funcs, t.Function)
	}
	funcs = append(funcs, in.Functions...)
	if len(funcs) == 0 {
		return nil, nil, nil
	}
	tools := make([]anthTool, 0, len(funcs))
	for _, f := range funcs {
		schema := f.Parameters
		if len(schema) == 0 || string(schema) == "null" {
			schema = json.RawMessage(`{"type":"object","properties":{}}`) // Anthropic requires a schema
		}
		tools = append(tools, anthTool{Name: f.Name, Description: f.Description, InputSchema: schema})
	}
	choice, err := toolChoiceFromChat(provider, cmp.Or(string(in.ToolChoice), string(in.FunctionCall)))
	if err != nil {
		return nil, nil, err
	}
	if in.ParallelToolCalls != nil && !*in.ParallelToolCalls && (choice == nil || choice.Type != "none") {
		if choice == nil {
			choice = &anthToolChoice{Type: "auto"}
		}
		choice.DisableParallelToolUse = true
	}
	return tools, choice, nil
}

// appendTurn adds blocks as a message from role, merged into the previous message if that
// is from the same role (Anthropic wants the results of parallel tool calls in one user
// message, and turns to alternate). A message with no blocks is dropped: Anthropic rejects
// empty content.
func appendTurn(msgs []anthMessage, role string, blocks anthContent) []anthMessage {
	if len(blocks) == 0 {
		return msgs
	}
	if n := len(msgs); n > 0 && msgs[n-1].Role == role {
		msgs[n-1].Content = append(msgs[n-1].Content, blocks...)
		return msgs
	}
	return append(msgs, anthMessage{Role: role, Content: blocks})
}

// blocksFromParts translates the parts of user message i into text and image blocks.
func blocksFromParts(provider string, i int, parts chatContent) (anthContent, error) {
	var blocks anthContent
	for j, p := range parts {
		switch p.Type {
		case "text":
			if p.Text != "" { // Anthropic rejects empty text blocks
				blocks = append(blocks, anthBlock{Type: "text", Text: p.Text})
			}
		case "image_url":
			if p.ImageURL == nil {
				return nil, invalidRequest(provider, "messages[%d].content[%d]: image_url is missing", i, j)
			}
			src, err := anthSourceFromURL(p.ImageURL.URL)
			if err != nil {
				return nil, invalidRequest(provider, "messages[%d].content[%d].image_url: %v", i, j, err)
			}
			blocks = append(blocks, anthBlock{Type: "image", Source: src})
		default:
			return nil, invalidRequest(provider, "messages[%d].content[%d]: content type %q is not supported by %s",
				i, j, p.Type, provider)
		}
	}
	return blocks, nil
}

// anthSourceFromURL reads an image URL: a base64 data: URL becomes inline data, an http(s)
// URL is passed for Anthropic to fetch.
func anthSourceFromURL(u string) (*anthSource, error) {
	if mediaType, data, ok := parseDataURL(u); ok {
		return &anthSource{Type: "base64", MediaType: mediaType, Data: data}, nil
	}
	if strings.HasPrefix(u, "https://") || strings.HasPrefix(u, "http://") {
		return &anthSource{Type: "url", URL: u}, nil
	}
	return nil, fmt.Errorf("want a base64 data: URL or an http(s) URL")
}

// toolChoiceFromChat reads tool_choice ("auto", "none", "required" or a named function) or
// the legacy function_call ("auto", "none" or {"name"}). Empty means the upstream default.
func toolChoiceFromChat(provider, raw string) (*anthToolChoice, error) {
	if raw == "" || raw == "null" {
		return nil, nil
	}
	var s string
	if json.Unmarshal([]byte(raw), &s) == nil {
		switch s {
		case "auto":
			return &anthToolChoice{Type: "auto"}, nil
		case "none":
			return &anthToolChoice{Type: "none"}, nil
		case "required":
			return &anthToolChoice{Type: "any"}, nil
		}
		return nil, invalidRequest(provider, "tool_choice %q is not supported", s)
	}
	var named struct {
		chatFunctionChoice
		Name string `json:"name"` // legacy function_call
	}
	if err := json.Unmarshal([]byte(raw), &named); err != nil {
		return nil, invalidRequest(provider, "tool_choice: %v", err)
	}
	name := cmp.Or(named.Function.Name, named.Name)
	if name == "" {
		return nil, invalidRequest(provider, "tool_choice: a function name is required")
	}
	return &anthToolChoice{Type: "tool", Name: name}, nil
}

// ---- Messages answer → chat completion (anthropic adapter) ----

// finishFromStop maps an Anthropic stop reason to a chat finish reason.
func finishFromStop(stop string) string {
	switch stop {
	case stopMaxTokens, stopContextLimit:
		return finishLength
	case stopToolUse:
		return finishToolCalls
	case stopRefusal:
		return finishContentFilter
	}
	return finishStop // end_turn, stop_sequence, pause_turn
}

// chatFromMessage translates a whole Messages answer into a chat.completion.
func chatFromMessage(m *anthResponse, created int64) *chatCompletion {
	var text strings.Builder
	var calls []chatToolCall
	for _, b := range m.Content {
		switch b.Type {
		case "text":
			text.WriteString(b.Text)
		case "tool_use":
			calls = append(calls, chatToolCall{ID: b.ID, Type: "function",
				Function: chatFunctionCall{Name: b.Name, Arguments: compactArgs(b.Input)}})
		}
	}
	answer := &chatAnswer{Role: "assistant", ToolCalls: calls}
	if text.Len() > 0 || len(calls) == 0 {
		s := text.String()
		answer.Content = &s
	}
	finish := finishFromStop(deref(m.StopReason))
	return &chatCompletion{
		ID: m.ID, Object: "chat.completion", Created: created, Model: m.Model,
		Choices: []chatChoice{{Message: answer, FinishReason: &finish}},
		Usage:   newChatUsage(m.Usage.prompt(), m.Usage.OutputTokens, m.Usage.CacheReadInputTokens),
	}
}

// ---- Messages stream → chat.completion.chunk stream (anthropic adapter) ----

// chunksFromEvents translates the events of a Messages stream into chat.completion.chunk
// payloads, one event at a time.
type chunksFromEvents struct {
	provider  string
	created   int64
	wantUsage bool // the client asked for the final usage chunk

	id, model string
	usage     anthUsageTracker
	tools     map[int]int // content block index → tool call index
	finish    string
}

func newChunksFromEvents(provider string, created int64, wantUsage bool) *chunksFromEvents {
	return &chunksFromEvents{provider: provider, created: created, wantUsage: wantUsage, tools: map[int]int{}}
}

// event takes one event's data and returns the chunks to send, and done once message_stop
// arrived. An error event is an *Error.
func (s *chunksFromEvents) event(data []byte) (chunks [][]byte, done bool, err error) {
	var ev anthEvent
	if err := json.Unmarshal(data, &ev); err != nil {
		return nil, false, badResponse(s.provider, "stream event", err)
	}
	switch ev.Type {
	case "message_start":
		if ev.Message == nil {
			return nil, false, badResponse(s.provider, "message_start without a message", nil)
		}
		s.id, s.model = ev.Message.ID, ev.Message.Model
		s.usage.start(ev.Message.Usage)
		empty := ""
		return s.chunk(&chatDelta{Role: "assistant", Content: &empty}, nil), false, nil
	case "content_block_start":
		if b := ev.ContentBlock; b != nil && b.Type == "tool_use" {
			n := len(s.tools)
			s.tools[ev.Index] = n
			return s.chunk(&chatDelta{ToolCalls: []chatToolCallDelta{{Index: n, ID: b.ID, Type: "function",
				Function: chatFunctionCall{Name: b.Name}}}}, nil), false, nil
		} else if b != nil && b.Type == "text" && b.Text != "" {
			return s.chunk(&chatDelta{Content: &b.Text}, nil), false, nil
		}
	case "content_block_delta":
		if ev.Delta == nil {
			return nil, false, badResponse(s.provider, "content_block_delta without a delta", nil)
		}
		switch ev.Delta.Type {
		case "text_delta":
			if ev.Delta.Text != "" {
				return s.chunk(&chatDelta{Content: &ev.Delta.Text}, nil), false, nil
			}
		case "input_json_delta":
			n, ok := s.tools[ev.Index]
			if ok && ev.Delta.PartialJSON != "" {
				return s.chunk(&chatDelta{ToolCalls: []chatToolCallDelta{{Index: n,
					Function: chatFunctionCall{Arguments: ev.Delta.PartialJSON}}}}, nil), false, nil
			}
		}
		// thinking_delta and signature_delta have no place in a chat completion.
	case "message_delta":
		if ev.Usage != nil {
			s.usage.delta(*ev.Usage)
		}
		if ev.Delta != nil && ev.Delta.StopReason != nil {
			s.finish = finishFromStop(*ev.Delta.StopReason)
			return s.chunk(&chatDelta{}, &s.finish), false, nil
		}
	case "message_stop":
		if !s.wantUsage {
			return nil, true, nil
		}
		u := s.usage.usage
		c := chatCompletion{ID: s.id, Object: "chat.completion.chunk", Created: s.created, Model: s.model,
			Choices: []chatChoice{}, Usage: newChatUsage(u.prompt(), u.OutputTokens, u.CacheReadInputTokens)}
		return [][]byte{mustMarshal(c)}, true, nil
	case "error":
		return nil, false, anthStreamError(ev.Error)
	}
	return nil, false, nil // ping, content_block_stop and event types added later
}

func (s *chunksFromEvents) chunk(d *chatDelta, finish *string) [][]byte {
	c := chatCompletion{ID: s.id, Object: "chat.completion.chunk", Created: s.created, Model: s.model,
		Choices: []chatChoice{{Delta: d, FinishReason: finish}}}
	return [][]byte{mustMarshal(c)}
}
