package providers

import (
	"cmp"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"

	"github.com/sluicehq/sluice/pkg/tokens"
)

// Translations from the Anthropic Messages format to chat completions and back, with which
// the openai adapter serves Messages clients; translate_anthropic.go has the other
// direction and the rules both follow.

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
func (s *eventsFromChunks) result() *tokens.Usage {
	if s.usage == nil {
		return nil
	}
	return &tokens.Usage{PromptTokens: s.usage.PromptTokens, CompletionTokens: s.usage.CompletionTokens}
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
