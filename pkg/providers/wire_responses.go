package providers

import (
	"bytes"
	"encoding/json"
	"errors"
)

// The OpenAI Responses wire format (POST /v1/responses), as far as the translation to and
// from chat completions reads and writes it. An openai channel whose upstream serves the
// Responses API itself forwards bodies untouched and never decodes them into these types.

// endpointResponses is the Sluice route of the Responses API.
const endpointResponses = "/v1/responses"

// responsesRequest is a POST /v1/responses body. Members Sluice cannot honour on a
// translated call are decoded only to be refused (see chatFromResponses).
type responsesRequest struct {
	Model             string            `json:"model"`
	Input             responsesInput    `json:"input"`
	Instructions      string            `json:"instructions,omitempty"`
	MaxOutputTokens   *int              `json:"max_output_tokens,omitempty"`
	Temperature       *float64          `json:"temperature,omitempty"`
	TopP              *float64          `json:"top_p,omitempty"`
	Stream            bool              `json:"stream,omitempty"`
	Tools             []responsesTool   `json:"tools,omitempty"`
	ToolChoice        json.RawMessage   `json:"tool_choice,omitempty"`
	ParallelToolCalls *bool             `json:"parallel_tool_calls,omitempty"`
	User              string            `json:"user,omitempty"`
	Metadata          map[string]string `json:"metadata,omitempty"`
	Text              *responsesText    `json:"text,omitempty"`
	Reasoning         *struct {
		Effort string `json:"effort,omitempty"`
	} `json:"reasoning,omitempty"`

	// Refused when translated: state kept at OpenAI, or work only OpenAI does.
	PreviousResponseID string          `json:"previous_response_id,omitempty"`
	Conversation       json.RawMessage `json:"conversation,omitempty"`
	Prompt             json.RawMessage `json:"prompt,omitempty"`
	Background         bool            `json:"background,omitempty"`
}

// responsesText is the request's (and response's) text settings: the output format.
type responsesText struct {
	Format *responsesFormat `json:"format,omitempty"`
}

// responsesFormat is text.format: {"type":"text"}, {"type":"json_object"} or
// {"type":"json_schema","name","schema","strict","description"}.
type responsesFormat struct {
	Type        string          `json:"type"`
	Name        string          `json:"name,omitempty"`
	Description string          `json:"description,omitempty"`
	Schema      json.RawMessage `json:"schema,omitempty"`
	Strict      *bool           `json:"strict,omitempty"`
}

// responsesInput is the input: a string (one user message) or a list of items.
type responsesInput []responsesItem

// UnmarshalJSON accepts a string or an array of items.
func (in *responsesInput) UnmarshalJSON(b []byte) error {
	return stringOrArray(b, (*[]responsesItem)(in), func(s string) responsesItem {
		return responsesItem{Type: "message", Role: "user", Content: responsesContent{{Type: "input_text", Text: s}}}
	}, "input must be a string or an array of items")
}

// stringOrArray decodes b, a JSON array or a string (which one turns into the one
// element), into *out; anything else is an error saying want.
func stringOrArray[T any](b []byte, out *[]T, one func(string) T, want string) error {
	b = bytes.TrimSpace(b)
	if len(b) > 0 && b[0] == '"' {
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		*out = []T{one(s)}
		return nil
	}
	var items []T
	if err := json.Unmarshal(b, &items); err != nil {
		return errors.New(want)
	}
	*out = items
	return nil
}

// responsesItem is one input item: a message (type "message", or no type with a role), a
// function_call the model made earlier, a function_call_output answering it, or another
// type (reasoning, built-in tool calls, item references) that the translation drops or
// refuses.
type responsesItem struct {
	Type    string           `json:"type"`
	Role    string           `json:"role,omitempty"`
	Content responsesContent `json:"content,omitempty"`
	// function_call
	ID        string `json:"id,omitempty"`
	CallID    string `json:"call_id,omitempty"`
	Name      string `json:"name,omitempty"`
	Arguments string `json:"arguments,omitempty"`
	// function_call_output: a string, or an array of input parts
	Output json.RawMessage `json:"output,omitempty"`
}

// responsesContent is a message's content: a string (one text part) or a list of parts.
type responsesContent []responsesPart

// UnmarshalJSON accepts a string or an array of parts.
func (c *responsesContent) UnmarshalJSON(b []byte) error {
	return stringOrArray(b, (*[]responsesPart)(c), func(s string) responsesPart {
		return responsesPart{Type: "input_text", Text: s}
	}, "content must be a string or an array of content parts")
}

// responsesPart is one content part: input_text, output_text, refusal, input_image or
// input_file.
type responsesPart struct {
	Type     string `json:"type"`
	Text     string `json:"text,omitempty"`
	Refusal  string `json:"refusal,omitempty"`
	ImageURL string `json:"image_url,omitempty"`
	FileID   string `json:"file_id,omitempty"`
	Detail   string `json:"detail,omitempty"`
}

// responsesTool is a tool: a function (type "function") or a built-in tool, which runs at
// OpenAI and has no chat form.
type responsesTool struct {
	Type        string          `json:"type"`
	Name        string          `json:"name,omitempty"`
	Description string          `json:"description,omitempty"`
	Parameters  json.RawMessage `json:"parameters,omitempty"`
	Strict      *bool           `json:"strict,omitempty"`
}

// response is the response object: the whole answer, or in a stream event its state.
type response struct {
	ID                 string             `json:"id"`
	Object             string             `json:"object"` // "response"
	CreatedAt          int64              `json:"created_at"`
	Status             string             `json:"status"`
	Error              *responseError     `json:"error"`
	IncompleteDetails  *incompleteDetails `json:"incomplete_details"`
	Instructions       *string            `json:"instructions"`
	MaxOutputTokens    *int               `json:"max_output_tokens"`
	Model              string             `json:"model"`
	Output             []responseItem     `json:"output"`
	ParallelToolCalls  bool               `json:"parallel_tool_calls"`
	PreviousResponseID *string            `json:"previous_response_id"`
	Store              bool               `json:"store"`
	Temperature        *float64           `json:"temperature"`
	Text               responsesText      `json:"text"`
	ToolChoice         json.RawMessage    `json:"tool_choice"`
	Tools              []responsesTool    `json:"tools"`
	TopP               *float64           `json:"top_p"`
	Truncation         string             `json:"truncation"`
	Usage              *responseUsage     `json:"usage"`
	User               *string            `json:"user"`
	Metadata           map[string]string  `json:"metadata"`
}

// Statuses of a response.
const (
	statusInProgress = "in_progress"
	statusCompleted  = "completed"
	statusIncomplete = "incomplete"
	statusFailed     = "failed"
)

type responseError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

type incompleteDetails struct {
	Reason string `json:"reason"` // max_output_tokens or content_filter
}

// responseItem is one output item: a message or a function_call.
type responseItem struct {
	Type   string `json:"type"`
	ID     string `json:"id"`
	Status string `json:"status"`
	// message
	Role    string            `json:"role,omitempty"`
	Content []responseContent `json:"content,omitempty"`
	// function_call
	CallID    string `json:"call_id,omitempty"`
	Name      string `json:"name,omitempty"`
	Arguments string `json:"arguments,omitempty"`
}

// MarshalJSON writes the fields of the item's type, including those OpenAI always sends
// even when empty: a message's content and a function call's arguments.
func (it responseItem) MarshalJSON() ([]byte, error) {
	if it.Type == "function_call" {
		return json.Marshal(struct {
			Type      string `json:"type"`
			ID        string `json:"id"`
			CallID    string `json:"call_id"`
			Name      string `json:"name"`
			Arguments string `json:"arguments"`
			Status    string `json:"status"`
		}{it.Type, it.ID, it.CallID, it.Name, it.Arguments, it.Status})
	}
	content := it.Content
	if content == nil {
		content = []responseContent{}
	}
	return json.Marshal(struct {
		Type    string            `json:"type"`
		ID      string            `json:"id"`
		Status  string            `json:"status"`
		Role    string            `json:"role"`
		Content []responseContent `json:"content"`
	}{it.Type, it.ID, it.Status, it.Role, content})
}

// responseContent is an output_text part of a message.
type responseContent struct {
	Type        string `json:"type"` // "output_text"
	Text        string `json:"text"`
	Annotations []any  `json:"annotations"`
	Logprobs    []any  `json:"logprobs"`
}

func outputText(text string) responseContent {
	return responseContent{Type: "output_text", Text: text, Annotations: []any{}, Logprobs: []any{}}
}

type responseUsage struct {
	InputTokens        int64 `json:"input_tokens"`
	InputTokensDetails struct {
		CachedTokens int64 `json:"cached_tokens"`
	} `json:"input_tokens_details"`
	OutputTokens        int64 `json:"output_tokens"`
	OutputTokensDetails struct {
		ReasoningTokens int64 `json:"reasoning_tokens"`
	} `json:"output_tokens_details"`
	TotalTokens int64 `json:"total_tokens"`
}

// responseUsageFromChat is a chat completion's usage as a response's.
func responseUsageFromChat(u *chatUsage) *responseUsage {
	if u == nil {
		return nil
	}
	r := &responseUsage{InputTokens: u.PromptTokens, OutputTokens: u.CompletionTokens,
		TotalTokens: u.PromptTokens + u.CompletionTokens}
	if u.PromptTokensDetails != nil {
		r.InputTokensDetails.CachedTokens = u.PromptTokensDetails.CachedTokens
	}
	return r
}

// responseEvent is one event of a Responses stream. Each event type sets some fields; the
// indexes are pointers because 0 is a value they must show.
type responseEvent struct {
	Type           string           `json:"type"`
	SequenceNumber int64            `json:"sequence_number"`
	Response       *response        `json:"response,omitempty"`
	OutputIndex    *int             `json:"output_index,omitempty"`
	ItemID         string           `json:"item_id,omitempty"`
	ContentIndex   *int             `json:"content_index,omitempty"`
	Item           *responseItem    `json:"item,omitempty"`
	Part           *responseContent `json:"part,omitempty"`
	Delta          *string          `json:"delta,omitempty"`
	Text           *string          `json:"text,omitempty"`
	Arguments      *string          `json:"arguments,omitempty"`
	Name           string           `json:"name,omitempty"`
}
