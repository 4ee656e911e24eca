package providers

import (
	"bytes"
	"cmp"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
)

// Translations between the OpenAI chat completions format and the Anthropic Messages format,
// in both directions: the anthropic adapter serves chat clients with them, and the openai
// adapter serves Messages clients. Each direction has a request, a whole-answer and a
// stream translation.
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

func deref[T any](p *T) T {
	if p == nil {
		var zero T
		return zero
	}
	return *p
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

// parseDataURL splits "data:<media type>;base64,<data>".
func parseDataURL(u string) (mediaType, data string, ok bool) {
	rest, ok := strings.CutPrefix(u, "data:")
	if !ok {
		return "", "", false
	}
	meta, data, ok := strings.Cut(rest, ",")
	if !ok {
		return "", "", false
	}
	mediaType, ok = strings.CutSuffix(meta, ";base64")
	if !ok || mediaType == "" {
		return "", "", false
	}
	return mediaType, data, true
}

// dataURL is the inverse of parseDataURL.
func dataURL(mediaType, data string) string { return "data:" + mediaType + ";base64," + data }

// toolInput checks that a tool call's arguments are a JSON object ("" counts as {}) and
// returns them compacted.
func toolInput(args string) (json.RawMessage, error) {
	s := strings.TrimSpace(args)
	if s == "" {
		return json.RawMessage("{}"), nil
	}
	var buf bytes.Buffer
	if s[0] != '{' || json.Compact(&buf, []byte(s)) != nil {
		return nil, fmt.Errorf("not a JSON object")
	}
	return buf.Bytes(), nil
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

// compactArgs renders a tool input as the arguments string of a chat tool call.
func compactArgs(input json.RawMessage) string {
	var buf bytes.Buffer
	if len(input) == 0 || json.Compact(&buf, input) != nil {
		return "{}"
	}
	return buf.String()
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

// ---- Messages request → chat completions request (openai adapter) ----

// chatFromMessages translates a Messages request body into a chat completions request.
// maxCompletion says whether the cap goes in max_completion_tokens (OpenAI's own API, whose
// reasoning models refuse max_tokens) or max_tokens (what other compatible servers know).
func chatFromMessages(provider string, body []byte, maxCompletion bool) (*chatRequest, error) {
	var in messagesRequest
	if err := json.Unmarshal(body, &in); err != nil {
		return nil, invalidRequest(provider, "body is not a valid Messages request: %v", err)
	}
	out := &chatRequest{Model: in.Model, Temperature: in.Temperature, TopP: in.TopP, Stop: in.StopSequences,
		Stream: in.Stream}
	if in.MaxTokens > 0 {
		n := in.MaxTokens
		if maxCompletion {
			out.MaxCompletionTokens = &n
		} else {
			out.MaxTokens = &n
		}
	}
	if in.Stream {
		out.StreamOptions = &streamOptions{IncludeUsage: true}
	}
	if in.Metadata != nil {
		out.User = in.Metadata.UserID
	}
	for i, b := range in.System {
		if b.Type != "text" {
			return nil, invalidRequest(provider, "system[%d]: only text blocks are supported", i)
		}
	}
	if s := in.System.text("\n"); s != "" {
		out.Messages = append(out.Messages, chatMessage{Role: "system", Content: textContent(s)})
	}
	for i, m := range in.Messages {
		switch m.Role {
		case "user":
			msgs, err := chatFromUserBlocks(provider, i, m.Content)
			if err != nil {
				return nil, err
			}
			out.Messages = append(out.Messages, msgs...)
		case "assistant":
			msg, err := chatFromAssistantBlocks(provider, i, m.Content)
			if err != nil {
				return nil, err
			}
			if msg.Content != nil || len(msg.ToolCalls) > 0 {
				out.Messages = append(out.Messages, msg)
			}
		default:
			return nil, invalidRequest(provider, "messages[%d]: role %q is not supported", i, m.Role)
		}
	}
	tools, choice, parallel, err := chatToolsFromMessages(provider, &in)
	if err != nil {
		return nil, err
	}
	out.Tools, out.ToolChoice, out.ParallelToolCalls = tools, choice, parallel
	return out, nil
}

// chatFromAssistantBlocks translates assistant message i: text joined into the content,
// tool_use blocks into tool calls, and thinking dropped (another model's reasoning means
// nothing to this one).
func chatFromAssistantBlocks(provider string, i int, blocks anthContent) (chatMessage, error) {
	msg := chatMessage{Role: "assistant"}
	var text strings.Builder
	for j, b := range blocks {
		switch b.Type {
		case "text":
			text.WriteString(b.Text)
		case "tool_use":
			msg.ToolCalls = append(msg.ToolCalls, chatToolCall{ID: b.ID, Type: "function",
				Function: chatFunctionCall{Name: b.Name, Arguments: compactArgs(b.Input)}})
		case "thinking", "redacted_thinking":
		default:
			return chatMessage{}, invalidRequest(provider, "messages[%d].content[%d]: block type %q is not supported by %s",
				i, j, b.Type, provider)
		}
	}
	msg.Content = textContent(text.String())
	return msg, nil
}

// chatToolsFromMessages translates tools, tool_choice and disable_parallel_tool_use. Server
// tools (web search, code execution …) run at Anthropic and have no chat form.
func chatToolsFromMessages(provider string, in *messagesRequest) ([]chatTool, json.RawMessage, *bool, error) {
	var tools []chatTool
	for i, t := range in.Tools {
		if t.Type != "" && t.Type != "custom" {
			return nil, nil, nil, invalidRequest(provider, "tools[%d]: tool type %q is not supported by %s", i, t.Type, provider)
		}
		tools = append(tools, chatTool{Type: "function",
			Function: chatFunction{Name: t.Name, Description: t.Description, Parameters: t.InputSchema}})
	}
	tc := in.ToolChoice
	if tc == nil || len(tools) == 0 {
		return tools, nil, nil, nil
	}
	var choice any
	switch tc.Type {
	case "auto":
		choice = "auto"
	case "any":
		choice = "required"
	case "none":
		choice = "none"
	case "tool":
		choice = chatFunctionChoice{Type: "function", Function: chatFuncName{Name: tc.Name}}
	default:
		return nil, nil, nil, invalidRequest(provider, "tool_choice type %q is not supported", tc.Type)
	}
	var parallel *bool
	if tc.DisableParallelToolUse {
		parallel = new(bool)
	}
	return tools, mustMarshal(choice), parallel, nil
}

// chatFromUserBlocks translates user message i: its tool results become tool messages,
// which must come first, straight after the assistant's tool calls; its text and images
// become one user message after them. Images inside tool results, which a tool message
// cannot hold, go into that user message too.
func chatFromUserBlocks(provider string, i int, blocks anthContent) ([]chatMessage, error) {
	var tools []chatMessage
	var parts chatContent
	for j, b := range blocks {
		switch b.Type {
		case "text":
			parts = append(parts, chatPart{Type: "text", Text: b.Text})
		case "image":
			p, err := imagePart(b.Source)
			if err != nil {
				return nil, invalidRequest(provider, "messages[%d].content[%d]: %v", i, j, err)
			}
			parts = append(parts, p)
		case "tool_result":
			var text strings.Builder
			for k, c := range b.Content {
				switch c.Type {
				case "text":
					text.WriteString(c.Text)
				case "image":
					p, err := imagePart(c.Source)
					if err != nil {
						return nil, invalidRequest(provider, "messages[%d].content[%d].content[%d]: %v", i, j, k, err)
					}
					parts = append(parts, p)
				default:
					return nil, invalidRequest(provider, "messages[%d].content[%d].content[%d]: block type %q is not supported by %s",
						i, j, k, c.Type, provider)
				}
			}
			// A tool message's content is always a string, even an empty one.
			tools = append(tools, chatMessage{Role: "tool", ToolCallID: b.ToolUseID,
				Content: chatContent{{Type: "text", Text: text.String()}}})
		default:
			return nil, invalidRequest(provider, "messages[%d].content[%d]: block type %q is not supported by %s",
				i, j, b.Type, provider)
		}
	}
	if len(parts) > 0 {
		tools = append(tools, chatMessage{Role: "user", Content: parts})
	}
	return tools, nil
}

// imagePart is the image_url part for an Anthropic image source.
func imagePart(src *anthSource) (chatPart, error) {
	switch {
	case src == nil:
		return chatPart{}, fmt.Errorf("image without a source")
	case src.Type == "base64":
		return chatPart{Type: "image_url", ImageURL: &chatImageURL{URL: dataURL(src.MediaType, src.Data)}}, nil
	case src.Type == "url":
		return chatPart{Type: "image_url", ImageURL: &chatImageURL{URL: src.URL}}, nil
	}
	return chatPart{}, fmt.Errorf("image source type %q is not supported", src.Type)
}

// ---- chat completion → Messages answer (openai adapter) ----

// stopFromFinish maps a chat finish reason to an Anthropic stop reason.
func stopFromFinish(finish string) string {
	switch finish {
	case finishLength:
		return stopMaxTokens
	case finishToolCalls, "function_call":
		return stopToolUse
	case finishContentFilter:
		return stopRefusal
	}
	return stopEndTurn
}

// messageID is the Messages id for a chat completion id.
func messageID(id string) string {
	if strings.HasPrefix(id, "msg_") {
		return id
	}
	return "msg_" + id
}

// anthUsageFromChat splits OpenAI's prompt tokens, which include cached ones, the way
// Anthropic counts them: input_tokens excludes cache reads.
func anthUsageFromChat(u *chatUsage) anthUsage {
	if u == nil {
		return anthUsage{}
	}
	var cached int64
	if u.PromptTokensDetails != nil {
		cached = u.PromptTokensDetails.CachedTokens
	}
	return anthUsage{InputTokens: u.PromptTokens - cached, CacheReadInputTokens: cached, OutputTokens: u.CompletionTokens}
}

// messageFromChat translates a whole chat.completion into a Messages answer.
func messageFromChat(provider string, c *chatCompletion) (*anthResponse, error) {
	if len(c.Choices) == 0 || c.Choices[0].Message == nil {
		return nil, badResponse(provider, "chat completion without a message", nil)
	}
	msg := c.Choices[0].Message
	content := anthContent{}
	if msg.Content != nil && *msg.Content != "" {
		content = append(content, anthBlock{Type: "text", Text: *msg.Content})
	}
	if msg.Refusal != nil && *msg.Refusal != "" {
		content = append(content, anthBlock{Type: "text", Text: *msg.Refusal})
	}
	calls := msg.ToolCalls
	if fc := msg.FunctionCall; fc != nil {
		calls = append(calls, chatToolCall{ID: "call_" + fc.Name, Type: "function", Function: *fc})
	}
	for _, tc := range calls {
		input, err := toolInput(tc.Function.Arguments)
		if err != nil {
			return nil, badResponse(provider, "tool call arguments", err)
		}
		content = append(content, anthBlock{Type: "tool_use", ID: tc.ID, Name: tc.Function.Name, Input: input})
	}
	stop := stopFromFinish(deref(c.Choices[0].FinishReason))
	return &anthResponse{
		ID: messageID(c.ID), Type: "message", Role: "assistant", Model: c.Model,
		Content: content, StopReason: &stop, Usage: anthUsageFromChat(c.Usage),
	}, nil
}

// ---- chat.completion.chunk stream → Messages stream (openai adapter) ----

// eventsFromChunks translates a chat.completion.chunk stream into the events of a Messages
// stream, one chunk at a time: message_start at the first chunk, a content block for the
// text and one per tool call, and message_delta and message_stop at [DONE].
type eventsFromChunks struct {
	provider string

	started bool
	id      string
	model   string
	open    int         // index of the open content block, -1 if none
	openTxt bool        // the open block is text
	blocks  int         // content blocks started so far
	tools   map[int]int // tool call index → content block index
	stop    string
	usage   *chatUsage
}

func newEventsFromChunks(provider string) *eventsFromChunks {
	return &eventsFromChunks{provider: provider, open: -1, tools: map[int]int{}}
}

// chunk takes one stream payload and returns the events to send, and done at [DONE]. An
// error chunk is an *Error.
func (s *eventsFromChunks) chunk(data []byte) (events []Event, done bool, err error) {
	if string(data) == "[DONE]" {
		events = s.start(events)
		events = s.closeBlock(events)
		md := anthMessageDelta{Type: "message_delta", Usage: anthUsageFromChat(s.usage)}
		md.Delta.StopReason = cmp.Or(s.stop, stopEndTurn)
		events = append(events, namedEvent("message_delta", md), namedEvent("message_stop", anthMessageStop{Type: "message_stop"}))
		return events, true, nil
	}
	var c chatCompletion
	if err := json.Unmarshal(data, &c); err != nil {
		return nil, false, badResponse(s.provider, "stream chunk", err)
	}
	if c.Error != nil {
		return nil, false, &Error{Provider: s.provider, StatusCode: http.StatusBadGateway, Type: c.Error.Type,
			Message: c.Error.Message}
	}
	if !s.started {
		if len(c.Choices) == 0 && c.Usage == nil {
			return nil, false, nil // Azure's prompt_filter_results chunk, before the answer: no id, no model
		}
		s.id, s.model = c.ID, c.Model
	}
	events = s.start(events)
	if c.Usage != nil {
		s.usage = c.Usage
	}
	for _, ch := range c.Choices {
		if ch.Index != 0 {
			continue // n > 1 has no Messages form; only the first choice is told
		}
		if d := ch.Delta; d != nil {
			text := deref(d.Content) + deref(d.Refusal)
			if text != "" {
				if s.open < 0 || !s.openTxt {
					events = s.closeBlock(events)
					events = s.openBlock(events, anthBlock{Type: "text"}, true)
				}
				events = append(events, namedEvent("content_block_delta", anthBlockDelta{Type: "content_block_delta",
					Index: s.open, Delta: anthDeltaBody{Type: "text_delta", Text: text}}))
			}
			for _, tc := range d.ToolCalls {
				idx, ok := s.tools[tc.Index]
				if !ok {
					events = s.closeBlock(events)
					id := cmp.Or(tc.ID, fmt.Sprintf("call_%d", tc.Index))
					events = s.openBlock(events, anthBlock{Type: "tool_use", ID: id, Name: tc.Function.Name}, false)
					idx = s.open
					s.tools[tc.Index] = idx
				}
				if tc.Function.Arguments != "" {
					events = append(events, namedEvent("content_block_delta", anthBlockDelta{Type: "content_block_delta",
						Index: idx, Delta: anthDeltaBody{Type: "input_json_delta", PartialJSON: tc.Function.Arguments}}))
				}
			}
		}
		if ch.FinishReason != nil && *ch.FinishReason != "" {
			s.stop = stopFromFinish(*ch.FinishReason)
		}
	}
	return events, false, nil
}

// result is the usage known so far: OpenAI reports it only at the end of a stream.
func (s *eventsFromChunks) result() *Usage {
	if s.usage == nil {
		return nil
	}
	return &Usage{PromptTokens: s.usage.PromptTokens, CompletionTokens: s.usage.CompletionTokens}
}

// start adds message_start if it has not been sent. OpenAI reports no usage until the end,
// so its input_tokens is 0; message_delta carries the real counts.
func (s *eventsFromChunks) start(events []Event) []Event {
	if s.started {
		return events
	}
	s.started = true
	return append(events, namedEvent("message_start", anthMessageStart{Type: "message_start", Message: anthResponse{
		ID: messageID(s.id), Type: "message", Role: "assistant", Model: s.model, Content: anthContent{},
	}}))
}

func (s *eventsFromChunks) openBlock(events []Event, b anthBlock, text bool) []Event {
	s.open, s.openTxt = s.blocks, text
	s.blocks++
	return append(events, namedEvent("content_block_start", anthBlockStart{Type: "content_block_start",
		Index: s.open, ContentBlock: b}))
}

func (s *eventsFromChunks) closeBlock(events []Event) []Event {
	if s.open < 0 {
		return events
	}
	events = append(events, namedEvent("content_block_stop", anthBlockStop{Type: "content_block_stop", Index: s.open}))
	s.open = -1
	return events
}

// namedEvent is a named Messages stream event.
func namedEvent(name string, v any) Event { return Event{Name: name, Data: mustMarshal(v)} }
