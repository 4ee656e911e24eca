package providers

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
)

// The Anthropic Messages wire format, as far as Sluice reads and writes it.

// messagesRequest is a POST /v1/messages body.
type messagesRequest struct {
	Model         string          `json:"model"`
	Messages      []anthMessage   `json:"messages"`
	System        anthContent     `json:"system,omitempty"`
	MaxTokens     int             `json:"max_tokens"`
	Temperature   *float64        `json:"temperature,omitempty"`
	TopP          *float64        `json:"top_p,omitempty"`
	TopK          *int            `json:"top_k,omitempty"`
	StopSequences []string        `json:"stop_sequences,omitempty"`
	Stream        bool            `json:"stream,omitempty"`
	Tools         []anthTool      `json:"tools,omitempty"`
	ToolChoice    *anthToolChoice `json:"tool_choice,omitempty"`
	Metadata      *anthMetadata   `json:"metadata,omitempty"`
}

type anthMetadata struct {
	UserID string `json:"user_id,omitempty"`
}

type anthMessage struct {
	Role    string      `json:"role"` // "user" or "assistant"
	Content anthContent `json:"content"`
}

// anthContent is a list of content blocks; it decodes from a string too (as one text block)
// and always encodes as an array.
type anthContent []anthBlock

// UnmarshalJSON accepts a string or an array of blocks.
func (c *anthContent) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if len(b) > 0 && b[0] == '"' {
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		*c = anthContent{{Type: "text", Text: s}}
		return nil
	}
	var blocks []anthBlock
	if err := json.Unmarshal(b, &blocks); err != nil {
		return errors.New("content must be a string or an array of content blocks")
	}
	*c = blocks
	return nil
}

// text joins the content's text blocks with sep.
func (c anthContent) text(sep string) string {
	var b []byte
	for i, blk := range c {
		if blk.Type == "text" {
			if i > 0 && len(b) > 0 {
				b = append(b, sep...)
			}
			b = append(b, blk.Text...)
		}
	}
	return string(b)
}

// anthBlock is one content block: text, image, tool_use or tool_result (thinking and other
// block types decode with just their Type set and are dropped by the translations).
type anthBlock struct {
	Type string `json:"type"`
	// text
	Text string `json:"text,omitempty"`
	// image (and document)
	Source *anthSource `json:"source,omitempty"`
	// tool_use
	ID    string          `json:"id,omitempty"`
	Name  string          `json:"name,omitempty"`
	Input json.RawMessage `json:"input,omitempty"`
	// tool_result
	ToolUseID string      `json:"tool_use_id,omitempty"`
	Content   anthContent `json:"content,omitempty"`
	IsError   bool        `json:"is_error,omitempty"`
}

// MarshalJSON writes the fields of the block's type, including the ones Anthropic always
// sends even when empty: the text of a text block and the input of a tool_use block.
func (b anthBlock) MarshalJSON() ([]byte, error) {
	type plain anthBlock // no MarshalJSON method: no recursion
	switch b.Type {
	case "text":
		return json.Marshal(struct {
			plain
			Text string `json:"text"`
		}{plain(b), b.Text})
	case "tool_use":
		input := b.Input
		if len(input) == 0 {
			input = json.RawMessage("{}")
		}
		return json.Marshal(struct {
			plain
			Input json.RawMessage `json:"input"`
		}{plain(b), input})
	}
	return json.Marshal(plain(b))
}

// anthSource is where an image's bytes are: inline base64 or a URL.
type anthSource struct {
	Type      string `json:"type"` // "base64" or "url"
	MediaType string `json:"media_type,omitempty"`
	Data      string `json:"data,omitempty"`
	URL       string `json:"url,omitempty"`
}

type anthTool struct {
	Type        string          `json:"type,omitempty"` // empty or "custom" for a client tool; server tools have a versioned type
	Name        string          `json:"name"`
	Description string          `json:"description,omitempty"`
	InputSchema json.RawMessage `json:"input_schema,omitempty"`
}

type anthToolChoice struct {
	Type                   string `json:"type"` // auto, any, tool, none
	Name                   string `json:"name,omitempty"`
	DisableParallelToolUse bool   `json:"disable_parallel_tool_use,omitempty"`
}

// anthResponse is a message: the whole answer, or in message_start its beginning.
type anthResponse struct {
	ID           string      `json:"id"`
	Type         string      `json:"type"` // "message"
	Role         string      `json:"role"`
	Model        string      `json:"model"`
	Content      anthContent `json:"content"`
	StopReason   *string     `json:"stop_reason"`
	StopSequence *string     `json:"stop_sequence"`
	Usage        anthUsage   `json:"usage"`
}

type anthUsage struct {
	InputTokens              int64 `json:"input_tokens"`
	OutputTokens             int64 `json:"output_tokens"`
	CacheCreationInputTokens int64 `json:"cache_creation_input_tokens,omitempty"`
	CacheReadInputTokens     int64 `json:"cache_read_input_tokens,omitempty"`
}

// prompt is every input token, cached or not: the same count OpenAI calls prompt_tokens.
func (u anthUsage) prompt() int64 {
	return u.InputTokens + u.CacheCreationInputTokens + u.CacheReadInputTokens
}

// Stop reasons of an Anthropic message.
const (
	stopEndTurn      = "end_turn"
	stopMaxTokens    = "max_tokens"
	stopSequence     = "stop_sequence"
	stopToolUse      = "tool_use"
	stopRefusal      = "refusal"
	stopPauseTurn    = "pause_turn"
	stopContextLimit = "model_context_window_exceeded"
)

// anthEvent is any event of a Messages stream, as read; each event type sets some fields.
type anthEvent struct {
	Type         string        `json:"type"`
	Message      *anthResponse `json:"message"`       // message_start
	Index        int           `json:"index"`         // content_block_*
	ContentBlock *anthBlock    `json:"content_block"` // content_block_start
	Delta        *anthDelta    `json:"delta"`         // content_block_delta, message_delta
	Usage        *anthUsage    `json:"usage"`         // message_delta
	Error        *anthError    `json:"error"`         // error
}

type anthDelta struct {
	Type         string  `json:"type"` // text_delta, input_json_delta, thinking_delta, signature_delta
	Text         string  `json:"text"`
	PartialJSON  string  `json:"partial_json"`
	StopReason   *string `json:"stop_reason"`
	StopSequence *string `json:"stop_sequence"`
}

type anthError struct {
	Type    string `json:"type"`
	Message string `json:"message"`
}

// status is the HTTP status Anthropic uses for an error type, for errors that arrive inside
// a stream after the 200; an unknown type is a 502.
func (e *anthError) status() int {
	switch e.Type {
	case "invalid_request_error":
		return http.StatusBadRequest
	case "authentication_error":
		return http.StatusUnauthorized
	case "permission_error":
		return http.StatusForbidden
	case "not_found_error":
		return http.StatusNotFound
	case "request_too_large":
		return http.StatusRequestEntityTooLarge
	case "rate_limit_error":
		return http.StatusTooManyRequests
	case "api_error":
		return http.StatusInternalServerError
	case "overloaded_error":
		return 529
	}
	return http.StatusBadGateway
}

// The events Sluice writes when it translates a stream into Anthropic's format. Each is its
// own type so that it encodes exactly the fields Anthropic sends.
type (
	anthMessageStart struct {
		Type    string       `json:"type"`
		Message anthResponse `json:"message"`
	}
	anthBlockStart struct {
		Type         string    `json:"type"`
		Index        int       `json:"index"`
		ContentBlock anthBlock `json:"content_block"`
	}
	anthBlockDelta struct {
		Type  string        `json:"type"`
		Index int           `json:"index"`
		Delta anthDeltaBody `json:"delta"`
	}
	anthDeltaBody struct {
		Type        string `json:"type"`
		Text        string `json:"text,omitempty"`
		PartialJSON string `json:"partial_json,omitempty"`
	}
	anthBlockStop struct {
		Type  string `json:"type"`
		Index int    `json:"index"`
	}
	anthMessageDelta struct {
		Type  string `json:"type"`
		Delta struct {
			StopReason   string  `json:"stop_reason"`
			StopSequence *string `json:"stop_sequence"`
		} `json:"delta"`
		Usage anthUsage `json:"usage"`
	}
	anthMessageStop struct {
		Type string `json:"type"`
	}
)
