package providers

import (
	"bytes"
	"encoding/json"
	"errors"
)

// The OpenAI chat completions wire format, as far as the translations to and from other
// APIs read and write it. Fields no translation uses are left out; the native OpenAI path
// forwards bodies untouched and never decodes them into these types.

// chatRequest is a POST /v1/chat/completions body.
type chatRequest struct {
	Model               string          `json:"model"`
	Messages            []chatMessage   `json:"messages"`
	MaxTokens           *int            `json:"max_tokens,omitempty"`
	MaxCompletionTokens *int            `json:"max_completion_tokens,omitempty"`
	Temperature         *float64        `json:"temperature,omitempty"`
	TopP                *float64        `json:"top_p,omitempty"`
	Stop                stringList      `json:"stop,omitempty"`
	N                   *int            `json:"n,omitempty"`
	Stream              bool            `json:"stream,omitempty"`
	StreamOptions       *streamOptions  `json:"stream_options,omitempty"`
	Tools               []chatTool      `json:"tools,omitempty"`
	ToolChoice          json.RawMessage `json:"tool_choice,omitempty"`
	ParallelToolCalls   *bool           `json:"parallel_tool_calls,omitempty"`
	User                string          `json:"user,omitempty"`
	// ResponseFormat and ReasoningEffort are what a Responses request's text.format and
	// reasoning.effort become; the translations to other APIs do not read them.
	ResponseFormat  json.RawMessage `json:"response_format,omitempty"`
	ReasoningEffort string          `json:"reasoning_effort,omitempty"`
	// Functions and FunctionCall are the legacy forms of Tools and ToolChoice.
	Functions    []chatFunction  `json:"functions,omitempty"`
	FunctionCall json.RawMessage `json:"function_call,omitempty"`
}

type streamOptions struct {
	IncludeUsage bool `json:"include_usage"`
}

// chatMessage is one message of a chat request, or the message of a chat.completion.
type chatMessage struct {
	Role       string         `json:"role"`
	Content    chatContent    `json:"content"`
	Name       string         `json:"name,omitempty"`
	ToolCalls  []chatToolCall `json:"tool_calls,omitempty"`
	ToolCallID string         `json:"tool_call_id,omitempty"`
	// FunctionCall is the legacy form of ToolCalls (an assistant message calling one function).
	FunctionCall *chatFunctionCall `json:"function_call,omitempty"`
}

// chatContent is a message's content: null, a string, or an array of parts. Decoding keeps
// whichever form arrived as parts; encoding writes null for no parts, a plain string for a
// single text part (the form every OpenAI-compatible server accepts), and an array otherwise.
type chatContent []chatPart

// chatPart is one part of a message's content.
type chatPart struct {
	Type     string        `json:"type"` // "text" or "image_url"; others are not translated
	Text     string        `json:"text,omitempty"`
	ImageURL *chatImageURL `json:"image_url,omitempty"`
}

type chatImageURL struct {
	URL    string `json:"url"`
	Detail string `json:"detail,omitempty"`
}

// UnmarshalJSON accepts null, a string, or an array of parts (an array element may also be a
// bare string, as some clients send).
func (c *chatContent) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	switch {
	case bytes.Equal(b, []byte("null")):
		*c = nil
		return nil
	case len(b) > 0 && b[0] == '"':
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		*c = chatContent{{Type: "text", Text: s}}
		return nil
	}
	var raw []json.RawMessage
	if err := json.Unmarshal(b, &raw); err != nil {
		return errors.New("content must be a string, an array of parts, or null")
	}
	parts := make(chatContent, 0, len(raw))
	for _, r := range raw {
		var p chatPart
		var s string
		if json.Unmarshal(r, &s) == nil {
			p = chatPart{Type: "text", Text: s}
		} else if err := json.Unmarshal(r, &p); err != nil {
			return err
		}
		parts = append(parts, p)
	}
	*c = parts
	return nil
}

// MarshalJSON writes null, a string, or an array of parts.
func (c chatContent) MarshalJSON() ([]byte, error) {
	switch {
	case len(c) == 0:
		return []byte("null"), nil
	case len(c) == 1 && c[0].Type == "text":
		return json.Marshal(c[0].Text)
	}
	return json.Marshal([]chatPart(c))
}

// text joins the content's text parts.
func (c chatContent) text() string {
	var b []byte
	for _, p := range c {
		if p.Type == "text" {
			b = append(b, p.Text...)
		}
	}
	return string(b)
}

// textContent is the content holding just s, or none if s is empty.
func textContent(s string) chatContent {
	if s == "" {
		return nil
	}
	return chatContent{{Type: "text", Text: s}}
}

type chatToolCall struct {
	ID       string           `json:"id"`
	Type     string           `json:"type"` // "function"
	Function chatFunctionCall `json:"function"`
}

type chatFunctionCall struct {
	Name      string `json:"name,omitempty"`
	Arguments string `json:"arguments"` // a JSON object, as a string
}

type chatTool struct {
	Type     string       `json:"type"` // "function"
	Function chatFunction `json:"function"`
}

type chatFunction struct {
	Name        string          `json:"name"`
	Description string          `json:"description,omitempty"`
	Parameters  json.RawMessage `json:"parameters,omitempty"` // a JSON schema
	Strict      *bool           `json:"strict,omitempty"`
}

// chatFunctionChoice is the object form of tool_choice, naming the function to call.
type chatFunctionChoice struct {
	Type     string       `json:"type"` // "function"
	Function chatFuncName `json:"function"`
}

type chatFuncName struct {
	Name string `json:"name"`
}

// stringList is a string or an array of strings; it encodes as an array.
type stringList []string

// UnmarshalJSON accepts null, a string or an array of strings.
func (l *stringList) UnmarshalJSON(b []byte) error {
	if string(bytes.TrimSpace(b)) == "null" {
		*l = nil
		return nil
	}
	var s string
	if err := json.Unmarshal(b, &s); err == nil {
		*l = stringList{s}
		return nil
	}
	var ss []string
	if err := json.Unmarshal(b, &ss); err != nil {
		return errors.New("must be a string or an array of strings")
	}
	*l = ss
	return nil
}

// chatCompletion is a chat.completion, or with Delta set in its choices a
// chat.completion.chunk.
type chatCompletion struct {
	ID      string       `json:"id"`
	Object  string       `json:"object"`
	Created int64        `json:"created"`
	Model   string       `json:"model"`
	Choices []chatChoice `json:"choices"`
	Usage   *chatUsage   `json:"usage,omitempty"`
	// Error is set on an error event in a stream.
	Error *struct {
		Message string `json:"message"`
		Type    string `json:"type"`
	} `json:"error,omitempty"`
}

type chatChoice struct {
	Index        int         `json:"index"`
	Message      *chatAnswer `json:"message,omitempty"`
	Delta        *chatDelta  `json:"delta,omitempty"`
	FinishReason *string     `json:"finish_reason"`
}

// chatAnswer is the assistant message of a chat.completion: content is a string or null.
type chatAnswer struct {
	Role         string            `json:"role"`
	Content      *string           `json:"content"`
	Refusal      *string           `json:"refusal,omitempty"`
	ToolCalls    []chatToolCall    `json:"tool_calls,omitempty"`
	FunctionCall *chatFunctionCall `json:"function_call,omitempty"`
}

// chatDelta is the delta of a chat.completion.chunk.
type chatDelta struct {
	Role      string              `json:"role,omitempty"`
	Content   *string             `json:"content,omitempty"`
	Refusal   *string             `json:"refusal,omitempty"`
	ToolCalls []chatToolCallDelta `json:"tool_calls,omitempty"`
}

// chatToolCallDelta is a piece of a tool call in a stream: the first piece of a call has its
// id, type and name; later ones add to its arguments.
type chatToolCallDelta struct {
	Index    int              `json:"index"`
	ID       string           `json:"id,omitempty"`
	Type     string           `json:"type,omitempty"`
	Function chatFunctionCall `json:"function"`
}

type chatUsage struct {
	PromptTokens        int64 `json:"prompt_tokens"`
	CompletionTokens    int64 `json:"completion_tokens"`
	TotalTokens         int64 `json:"total_tokens"`
	PromptTokensDetails *struct {
		CachedTokens int64 `json:"cached_tokens"`
	} `json:"prompt_tokens_details,omitempty"`
}

// newChatUsage fills in the total and, if any prompt tokens were cached, the details.
func newChatUsage(prompt, completion, cached int64) *chatUsage {
	u := &chatUsage{PromptTokens: prompt, CompletionTokens: completion, TotalTokens: prompt + completion}
	if cached > 0 {
		u.PromptTokensDetails = &struct {
			CachedTokens int64 `json:"cached_tokens"`
		}{cached}
	}
	return u
}

// Finish reasons of a chat completion.
const (
	finishStop          = "stop"
	finishLength        = "length"
	finishToolCalls     = "tool_calls"
	finishContentFilter = "content_filter"
)
