package providers

import (
	"cmp"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"strings"
	"time"
)

// Translations between the OpenAI Responses API and chat completions, with which every
// channel whose upstream lacks the Responses API serves it: the request goes up as a chat
// completion (and from there, on an anthropic or gemini channel, as a Messages or
// generateContent request, by the translations those adapters already have), and the
// answer or stream comes back as a response. The stream translation is in
// translate_responses_stream.go.
//
// What the Responses API can ask that chat completions cannot express is refused with a
// 400 *Error, never dropped: built-in tools (web search, file search, computer use, code
// interpreter …), stored state (previous_response_id, conversation, prompt templates,
// item references), background mode, file inputs. Reasoning items of earlier turns are
// dropped, as thinking blocks are elsewhere: another model's reasoning means nothing to
// this one.

// chatFromResponses translates a Responses request body into a chat completions request,
// and returns the request as read too (its settings are echoed in the response).
func chatFromResponses(provider string, body []byte, maxCompletion bool) (*chatRequest, *responsesRequest, error) {
	var in responsesRequest
	if err := json.Unmarshal(body, &in); err != nil {
		return nil, nil, invalidRequest(provider, "body is not a valid Responses request: %v", err)
	}
	switch {
	case in.PreviousResponseID != "":
		return nil, nil, invalidRequest(provider, "previous_response_id is not supported: Sluice keeps no responses; send the conversation in input")
	case len(in.Conversation) > 0 && string(in.Conversation) != "null":
		return nil, nil, invalidRequest(provider, "conversation is not supported: Sluice keeps no conversations; send the conversation in input")
	case len(in.Prompt) > 0 && string(in.Prompt) != "null":
		return nil, nil, invalidRequest(provider, "prompt (a stored prompt template) is not supported by %s", provider)
	case in.Background:
		return nil, nil, invalidRequest(provider, "background is not supported: use the header Prefer: respond-async, or POST /v1/jobs")
	}
	out := &chatRequest{Model: in.Model, Temperature: in.Temperature, TopP: in.TopP, Stream: in.Stream,
		ParallelToolCalls: in.ParallelToolCalls, User: in.User}
	if in.MaxOutputTokens != nil {
		n := *in.MaxOutputTokens
		if maxCompletion {
			out.MaxCompletionTokens = &n
		} else {
			out.MaxTokens = &n
		}
	}
	if in.Reasoning != nil {
		out.ReasoningEffort = in.Reasoning.Effort
	}
	if in.Instructions != "" {
		out.Messages = append(out.Messages, chatMessage{Role: "system", Content: textContent(in.Instructions)})
	}
	for i, it := range in.Input {
		var err error
		if out.Messages, err = appendChatFromItem(provider, out.Messages, i, &it); err != nil {
			return nil, nil, err
		}
	}
	if len(out.Messages) == 0 {
		return nil, nil, invalidRequest(provider, "input: at least one message is required")
	}
	for i, t := range in.Tools {
		if t.Type != "function" {
			return nil, nil, invalidRequest(provider, "tools[%d]: the built-in tool %q is not supported by %s (only function tools are)",
				i, t.Type, provider)
		}
		out.Tools = append(out.Tools, chatTool{Type: "function",
			Function: chatFunction{Name: t.Name, Description: t.Description, Parameters: t.Parameters, Strict: t.Strict}})
	}
	var err error
	if out.ToolChoice, err = chatToolChoiceFromResponses(provider, in.ToolChoice); err != nil {
		return nil, nil, err
	}
	if out.ResponseFormat, err = chatFormatFromResponses(provider, in.Text); err != nil {
		return nil, nil, err
	}
	return out, &in, nil
}

// appendChatFromItem adds input item i to the chat messages.
func appendChatFromItem(provider string, msgs []chatMessage, i int, it *responsesItem) ([]chatMessage, error) {
	switch {
	case it.Type == "message" || (it.Type == "" && it.Role != ""):
		switch it.Role {
		case "user", "system", "developer":
			parts, err := chatPartsFromResponses(provider, i, it.Content, it.Role == "user")
			if err != nil {
				return nil, err
			}
			return append(msgs, chatMessage{Role: it.Role, Content: parts}), nil
		case "assistant":
			var text strings.Builder
			for j, p := range it.Content {
				switch p.Type {
				case "output_text", "input_text":
					text.WriteString(p.Text)
				case "refusal":
					text.WriteString(p.Refusal)
				default:
					return nil, invalidRequest(provider, "input[%d].content[%d]: part type %q is not supported in an assistant message", i, j, p.Type)
				}
			}
			return append(msgs, chatMessage{Role: "assistant", Content: textContent(text.String())}), nil
		}
		return nil, invalidRequest(provider, "input[%d]: role %q is not supported", i, it.Role)
	case it.Type == "function_call":
		if _, err := toolInput(it.Arguments); err != nil {
			return nil, invalidRequest(provider, "input[%d].arguments: %v", i, err)
		}
		call := chatToolCall{ID: cmp.Or(it.CallID, it.ID), Type: "function",
			Function: chatFunctionCall{Name: it.Name, Arguments: it.Arguments}}
		// Parallel calls are one assistant message with several tool calls.
		if n := len(msgs); n > 0 && msgs[n-1].Role == "assistant" {
			msgs[n-1].ToolCalls = append(msgs[n-1].ToolCalls, call)
			return msgs, nil
		}
		return append(msgs, chatMessage{Role: "assistant", ToolCalls: []chatToolCall{call}}), nil
	case it.Type == "function_call_output":
		text, err := functionOutputText(provider, i, it.Output)
		if err != nil {
			return nil, err
		}
		// A tool message's content is always a string, even an empty one.
		return append(msgs, chatMessage{Role: "tool", ToolCallID: it.CallID,
			Content: chatContent{{Type: "text", Text: text}}}), nil
	case it.Type == "reasoning":
		return msgs, nil
	}
	return nil, invalidRequest(provider, "input[%d]: item type %q is not supported by %s", i, it.Type, provider)
}

// chatPartsFromResponses translates the content of a user, system or developer message.
func chatPartsFromResponses(provider string, i int, content responsesContent, images bool) (chatContent, error) {
	parts := make(chatContent, 0, len(content))
	for j, p := range content {
		switch {
		case p.Type == "input_text" || p.Type == "output_text":
			parts = append(parts, chatPart{Type: "text", Text: p.Text})
		case p.Type == "input_image" && images && p.ImageURL != "":
			parts = append(parts, chatPart{Type: "image_url", ImageURL: &chatImageURL{URL: p.ImageURL, Detail: p.Detail}})
		case p.Type == "input_image" && images:
			return nil, invalidRequest(provider, "input[%d].content[%d]: an image by file_id is not supported; send image_url", i, j)
		default:
			return nil, invalidRequest(provider, "input[%d].content[%d]: part type %q is not supported by %s", i, j, p.Type, provider)
		}
	}
	return parts, nil
}

// functionOutputText reads a function_call_output's output: a string, or text parts.
func functionOutputText(provider string, i int, raw json.RawMessage) (string, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return "", nil
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s, nil
	}
	var parts []responsesPart
	if err := json.Unmarshal(raw, &parts); err != nil {
		return "", invalidRequest(provider, "input[%d].output: must be a string or an array of content parts", i)
	}
	var text strings.Builder
	for j, p := range parts {
		if p.Type != "input_text" && p.Type != "output_text" {
			return "", invalidRequest(provider, "input[%d].output[%d]: part type %q is not supported by %s", i, j, p.Type, provider)
		}
		text.WriteString(p.Text)
	}
	return text.String(), nil
}

// chatToolChoiceFromResponses translates tool_choice: "auto", "none", "required" or
// {"type":"function","name"}.
func chatToolChoiceFromResponses(provider string, raw json.RawMessage) (json.RawMessage, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		if s != "auto" && s != "none" && s != "required" {
			return nil, invalidRequest(provider, "tool_choice %q is not supported", s)
		}
		return raw, nil
	}
	var obj struct {
		Type string `json:"type"`
		Name string `json:"name"`
	}
	if err := json.Unmarshal(raw, &obj); err != nil {
		return nil, invalidRequest(provider, "tool_choice: must be a string or an object")
	}
	if obj.Type != "function" || obj.Name == "" {
		return nil, invalidRequest(provider, "tool_choice of type %q is not supported by %s (only a named function is)", obj.Type, provider)
	}
	return mustMarshal(chatFunctionChoice{Type: "function", Function: chatFuncName{Name: obj.Name}}), nil
}

// chatFormatFromResponses translates text.format into a chat response_format.
func chatFormatFromResponses(provider string, t *responsesText) (json.RawMessage, error) {
	if t == nil || t.Format == nil {
		return nil, nil
	}
	f := t.Format
	switch f.Type {
	case "text":
		return nil, nil
	case "json_object":
		return json.RawMessage(`{"type":"json_object"}`), nil
	case "json_schema":
		return mustMarshal(map[string]any{"type": "json_schema", "json_schema": struct {
			Name        string          `json:"name"`
			Description string          `json:"description,omitempty"`
			Schema      json.RawMessage `json:"schema,omitempty"`
			Strict      *bool           `json:"strict,omitempty"`
		}{f.Name, f.Description, f.Schema, f.Strict}}), nil
	}
	return nil, invalidRequest(provider, "text.format type %q is not supported", f.Type)
}

// ---- chat completion → response ----

// newResponseID returns a fresh id with prefix, such as "resp_…".
func newResponseID(prefix string) string {
	b := make([]byte, 24)
	_, _ = rand.Read(b)
	return prefix + hex.EncodeToString(b)
}

// newResponse is the response object for req, in progress and without output: the
// request's settings echoed, as OpenAI echoes them, with OpenAI's defaults where it set
// none. store is false: Sluice keeps no response for later retrieval.
func newResponse(req *responsesRequest) *response {
	r := &response{ID: newResponseID("resp_"), Object: "response", CreatedAt: time.Now().Unix(),
		Status: statusInProgress, MaxOutputTokens: req.MaxOutputTokens, Model: req.Model, Output: []responseItem{},
		ParallelToolCalls: req.ParallelToolCalls == nil || *req.ParallelToolCalls,
		Temperature:       req.Temperature, TopP: req.TopP, ToolChoice: req.ToolChoice, Tools: req.Tools,
		Truncation: "disabled", Metadata: req.Metadata}
	if req.Instructions != "" {
		r.Instructions = &req.Instructions
	}
	if req.User != "" {
		r.User = &req.User
	}
	if req.Text != nil && req.Text.Format != nil {
		r.Text = *req.Text
	} else {
		r.Text = responsesText{Format: &responsesFormat{Type: "text"}}
	}
	if len(r.ToolChoice) == 0 {
		r.ToolChoice = json.RawMessage(`"auto"`)
	}
	if r.Tools == nil {
		r.Tools = []responsesTool{}
	}
	if r.Metadata == nil {
		r.Metadata = map[string]string{}
	}
	return r
}

// finishResponse sets a response's end state from a chat finish reason: a length or
// content-filter finish is an incomplete response, as OpenAI reports it.
func finishResponse(r *response, finish string) {
	switch finish {
	case finishLength:
		r.Status, r.IncompleteDetails = statusIncomplete, &incompleteDetails{Reason: "max_output_tokens"}
	case finishContentFilter:
		r.Status, r.IncompleteDetails = statusIncomplete, &incompleteDetails{Reason: "content_filter"}
	default:
		r.Status = statusCompleted
	}
}

// responseFromChat translates a whole chat.completion into the response r (from
// newResponse).
func responseFromChat(provider string, c *chatCompletion, r *response) (*response, error) {
	if len(c.Choices) == 0 || c.Choices[0].Message == nil {
		return nil, badResponse(provider, "chat completion without a message", nil)
	}
	msg := c.Choices[0].Message
	r.Model = cmp.Or(c.Model, r.Model)
	text := deref(msg.Content) + deref(msg.Refusal)
	if text != "" {
		r.Output = append(r.Output, responseItem{Type: "message", ID: newResponseID("msg_"), Status: statusCompleted,
			Role: "assistant", Content: []responseContent{outputText(text)}})
	}
	calls := msg.ToolCalls
	if fc := msg.FunctionCall; fc != nil {
		calls = append(calls, chatToolCall{ID: "call_" + fc.Name, Type: "function", Function: *fc})
	}
	for _, tc := range calls {
		r.Output = append(r.Output, responseItem{Type: "function_call", ID: newResponseID("fc_"), Status: statusCompleted,
			CallID: tc.ID, Name: tc.Function.Name, Arguments: tc.Function.Arguments})
	}
	finishResponse(r, deref(c.Choices[0].FinishReason))
	r.Usage = responseUsageFromChat(c.Usage)
	return r, nil
}
