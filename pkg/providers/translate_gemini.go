package providers

import (
	"cmp"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"mime"
	"path"
	"strings"
)

// Translations between the OpenAI chat completions format and the Gemini generateContent
// format: requests go from chat to Gemini, answers and streams from Gemini to chat.

// ---- chat completions request → Gemini request ----

// geminiFromChat translates a chat completions request body into a Gemini request and the
// model it names (without a "models/" prefix).
func geminiFromChat(provider string, body []byte) (*geminiRequest, string, error) {
	var in chatRequest
	if err := json.Unmarshal(body, &in); err != nil {
		return nil, "", invalidRequest(provider, "body is not a valid chat completions request: %v", err)
	}
	model := strings.TrimPrefix(in.Model, "models/")
	if model == "" {
		return nil, "", invalidRequest(provider, "model is required")
	}
	if in.N != nil && *in.N > 1 {
		return nil, "", invalidRequest(provider, "n greater than 1 is not supported by %s", provider)
	}
	out := &geminiRequest{}
	calls := map[string]string{} // tool call id → function name, for the tool messages that answer them
	for i, m := range in.Messages {
		switch m.Role {
		case "system", "developer":
			for _, p := range m.Content {
				if p.Type != "text" {
					return nil, "", invalidRequest(provider, "messages[%d]: a %s message may hold only text", i, m.Role)
				}
				if p.Text == "" {
					continue // Gemini rejects a part with no data
				}
				if out.SystemInstruction == nil {
					out.SystemInstruction = &geminiContent{}
				}
				out.SystemInstruction.Parts = append(out.SystemInstruction.Parts, geminiPart{Text: p.Text})
			}
		case "user":
			var parts []geminiPart
			for j, p := range m.Content {
				if p.Type == "text" && p.Text == "" {
					continue
				}
				part, err := geminiPartFromChat(p)
				if err != nil {
					return nil, "", invalidRequest(provider, "messages[%d].content[%d]: %v", i, j, err)
				}
				parts = append(parts, part)
			}
			out.Contents = appendGeminiTurn(out.Contents, "user", parts)
		case "assistant":
			var parts []geminiPart
			if t := m.Content.text(); t != "" {
				parts = append(parts, geminiPart{Text: t})
			}
			for j, tc := range m.ToolCalls {
				args, err := toolInput(tc.Function.Arguments)
				if err != nil {
					return nil, "", invalidRequest(provider, "messages[%d].tool_calls[%d].function.arguments: %v", i, j, err)
				}
				calls[tc.ID] = tc.Function.Name
				parts = append(parts, geminiPart{ThoughtSignature: signatureFromCallID(tc.ID),
					FunctionCall: &geminiFunctionCall{Name: tc.Function.Name, Args: args}})
			}
			out.Contents = appendGeminiTurn(out.Contents, "model", parts)
		case "tool":
			name, ok := calls[m.ToolCallID]
			if !ok {
				return nil, "", invalidRequest(provider, "messages[%d]: tool_call_id matches no earlier tool call", i)
			}
			out.Contents = appendGeminiTurn(out.Contents, "user", []geminiPart{{FunctionResponse: &geminiFunctionResponse{
				Name: name, Response: functionResponse(m.Content.text())}}})
		default:
			return nil, "", invalidRequest(provider, "messages[%d]: role %q is not supported by %s", i, m.Role, provider)
		}
	}
	if len(out.Contents) == 0 {
		return nil, "", invalidRequest(provider, "messages: at least one user or assistant message is required")
	}

	var decls []geminiFunctionDeclaration
	for i, t := range in.Tools {
		if t.Type != "function" && t.Type != "" {
			return nil, "", invalidRequest(provider, "tools[%d]: tool type %q is not supported by %s", i, t.Type, provider)
		}
		decls = append(decls, geminiDeclaration(t.Function))
	}
	for _, f := range in.Functions {
		decls = append(decls, geminiDeclaration(f))
	}
	if len(decls) > 0 {
		out.Tools = []geminiTool{{FunctionDeclarations: decls}}
		choice, err := toolChoiceFromChat(provider, cmp.Or(string(in.ToolChoice), string(in.FunctionCall)))
		if err != nil {
			return nil, "", err
		}
		if choice != nil {
			cfg := geminiFunctionCallingConfig{Mode: map[string]string{"auto": "AUTO", "none": "NONE", "any": "ANY", "tool": "ANY"}[choice.Type]}
			if choice.Type == "tool" {
				cfg.AllowedFunctionNames = []string{choice.Name}
			}
			out.ToolConfig = &geminiToolConfig{FunctionCallingConfig: cfg}
		}
	}

	gc := geminiGenerationConfig{Temperature: in.Temperature, TopP: in.TopP, StopSequences: in.Stop,
		MaxOutputTokens: cmp.Or(in.MaxCompletionTokens, in.MaxTokens)}
	if gc.MaxOutputTokens != nil || gc.Temperature != nil || gc.TopP != nil || len(gc.StopSequences) > 0 {
		out.GenerationConfig = &gc
	}
	return out, model, nil
}

func geminiDeclaration(f chatFunction) geminiFunctionDeclaration {
	d := geminiFunctionDeclaration{Name: f.Name, Description: f.Description}
	if len(f.Parameters) > 0 && string(f.Parameters) != "null" {
		d.ParametersJSONSchema = f.Parameters
	}
	return d
}

// appendGeminiTurn adds parts as content from role, merged into the previous content if
// that is from the same role (the answers to parallel function calls go in one content).
func appendGeminiTurn(contents []geminiContent, role string, parts []geminiPart) []geminiContent {
	if len(parts) == 0 {
		return contents
	}
	if n := len(contents); n > 0 && contents[n-1].Role == role {
		contents[n-1].Parts = append(contents[n-1].Parts, parts...)
		return contents
	}
	return append(contents, geminiContent{Role: role, Parts: parts})
}

// geminiPartFromChat translates a text or image part of a user message. An http(s) image
// URL is passed as file data for Gemini to fetch, typed by its extension.
func geminiPartFromChat(p chatPart) (geminiPart, error) {
	switch p.Type {
	case "text":
		return geminiPart{Text: p.Text}, nil
	case "image_url":
		if p.ImageURL == nil {
			return geminiPart{}, fmt.Errorf("image_url is missing")
		}
		u := p.ImageURL.URL
		if mediaType, data, ok := parseDataURL(u); ok {
			return geminiPart{InlineData: &geminiBlob{MimeType: mediaType, Data: data}}, nil
		}
		if strings.HasPrefix(u, "https://") || strings.HasPrefix(u, "http://") {
			mt, _, _ := strings.Cut(mime.TypeByExtension(path.Ext(strings.SplitN(u, "?", 2)[0])), ";")
			return geminiPart{FileData: &geminiFileData{MimeType: cmp.Or(mt, "image/jpeg"), FileURI: u}}, nil
		}
		return geminiPart{}, fmt.Errorf("image_url: want a base64 data: URL or an http(s) URL")
	}
	return geminiPart{}, fmt.Errorf("content type %q is not supported by gemini", p.Type)
}

// functionResponse is a tool's answer as the JSON object Gemini wants: the answer itself if
// it is a JSON object, else {"content": answer}.
func functionResponse(text string) json.RawMessage {
	if obj, err := toolInput(text); err == nil && strings.TrimSpace(text) != "" {
		return obj
	}
	return mustMarshal(map[string]string{"content": text})
}

// Gemini's thinking models sign each function call, and want the signature back with the
// call in later turns. Chat completions have no place for it except the call's id, which
// clients echo back, so it rides there: "<id>" + sigMark + base64url(signature).
const sigMark = "_ts_"

// callID returns a tool call id carrying the call's thought signature, if it has one.
func callID(id, signature string) string {
	if signature == "" {
		return id
	}
	raw, err := base64.StdEncoding.DecodeString(signature)
	if err != nil {
		return id // not the base64 Gemini sends; leave it out rather than corrupt it
	}
	return id + sigMark + base64.RawURLEncoding.EncodeToString(raw)
}

// signatureFromCallID recovers the thought signature callID put in id, or "".
func signatureFromCallID(id string) string {
	_, enc, ok := strings.Cut(id, sigMark)
	if !ok {
		return ""
	}
	raw, err := base64.RawURLEncoding.DecodeString(enc)
	if err != nil {
		return ""
	}
	return base64.StdEncoding.EncodeToString(raw)
}

// ---- Gemini answer → chat completion ----

// finishFromGemini maps a Gemini finish reason to a chat finish reason; a model that stops
// to call functions says STOP.
func finishFromGemini(reason string, calledTools bool) string {
	switch reason {
	case "MAX_TOKENS":
		return finishLength
	case "SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "IMAGE_SAFETY", "LANGUAGE":
		return finishContentFilter
	}
	if calledTools {
		return finishToolCalls
	}
	return finishStop
}

// chatFromGemini translates a whole Gemini answer into a chat.completion. newCallID names
// tool calls, which Gemini usually leaves unnamed.
func chatFromGemini(provider string, r *geminiResponse, model string, created int64, newCallID func() string) (*chatCompletion, error) {
	c := &chatCompletion{ID: "chatcmpl-" + r.ResponseID, Object: "chat.completion", Created: created,
		Model: cmp.Or(r.ModelVersion, model)}
	if r.UsageMetadata != nil {
		c.Usage = r.UsageMetadata.chat()
	}
	if len(r.Candidates) == 0 {
		if r.PromptFeedback == nil || r.PromptFeedback.BlockReason == "" {
			return nil, badResponse(provider, "answer without candidates", nil)
		}
		empty, finish := "", finishContentFilter // the prompt was blocked
		c.Choices = []chatChoice{{Message: &chatAnswer{Role: "assistant", Content: &empty}, FinishReason: &finish}}
		return c, nil
	}
	cand := r.Candidates[0]
	var text strings.Builder
	answer := &chatAnswer{Role: "assistant"}
	for _, p := range cand.Content.Parts {
		switch {
		case p.FunctionCall != nil:
			answer.ToolCalls = append(answer.ToolCalls, chatToolCall{
				ID: callID(cmp.Or(p.FunctionCall.ID, newCallID()), p.ThoughtSignature), Type: "function",
				Function: chatFunctionCall{Name: p.FunctionCall.Name, Arguments: compactArgs(p.FunctionCall.Args)}})
		case !p.Thought:
			text.WriteString(p.Text)
		}
	}
	if text.Len() > 0 || len(answer.ToolCalls) == 0 {
		s := text.String()
		answer.Content = &s
	}
	finish := finishFromGemini(cand.FinishReason, len(answer.ToolCalls) > 0)
	c.Choices = []chatChoice{{Message: answer, FinishReason: &finish}}
	return c, nil
}

// ---- Gemini stream → chat.completion.chunk stream ----

// chunksFromGemini translates the events of a streamGenerateContent stream into
// chat.completion.chunk payloads. A Gemini stream has no terminator: it is complete when it
// ends cleanly after an event whose candidate has a finish reason, and only then are the
// finish chunk and the usage chunk sent.
type chunksFromGemini struct {
	provider  string
	model     string
	created   int64
	wantUsage bool
	newCallID func() string

	id      string
	started bool
	calls   int    // tool calls so far
	reason  string // the finish reason Gemini gave, "" until it gives one
	usage   *geminiUsage
}

// event takes one event's data and returns the chunks to send.
func (s *chunksFromGemini) event(data []byte) ([][]byte, error) {
	var r geminiResponse
	if err := json.Unmarshal(data, &r); err != nil {
		return nil, badResponse(s.provider, "stream event", err)
	}
	if r.Error != nil {
		return nil, &Error{Provider: s.provider, StatusCode: cmp.Or(r.Error.Code, 502), Message: r.Error.Message}
	}
	if r.UsageMetadata != nil {
		s.usage = r.UsageMetadata
	}
	var out [][]byte
	if !s.started {
		s.started = true
		s.id = "chatcmpl-" + r.ResponseID
		s.model = cmp.Or(r.ModelVersion, s.model)
		empty := ""
		out = append(out, s.chunk(&chatDelta{Role: "assistant", Content: &empty}, nil))
	}
	if len(r.Candidates) == 0 {
		if r.PromptFeedback != nil && r.PromptFeedback.BlockReason != "" {
			s.reason = "PROHIBITED_CONTENT"
		}
		return out, nil
	}
	cand := r.Candidates[0]
	for _, p := range cand.Content.Parts {
		switch {
		case p.FunctionCall != nil:
			out = append(out, s.chunk(&chatDelta{ToolCalls: []chatToolCallDelta{{Index: s.calls,
				ID: callID(cmp.Or(p.FunctionCall.ID, s.newCallID()), p.ThoughtSignature), Type: "function",
				Function: chatFunctionCall{Name: p.FunctionCall.Name, Arguments: compactArgs(p.FunctionCall.Args)}}}}, nil))
			s.calls++
		case !p.Thought && p.Text != "":
			out = append(out, s.chunk(&chatDelta{Content: &p.Text}, nil))
		}
	}
	if cand.FinishReason != "" {
		s.reason = cand.FinishReason
	}
	return out, nil
}

// end is called when the stream ended cleanly; it returns the finish chunk and, if the
// client asked for it, the usage chunk. A stream that gave no finish reason is ErrTruncated.
func (s *chunksFromGemini) end() ([][]byte, error) {
	if s.reason == "" {
		return nil, &Error{Provider: s.provider, Err: fmt.Errorf("%w: stream ended without a finish reason", ErrTruncated)}
	}
	finish := finishFromGemini(s.reason, s.calls > 0)
	out := [][]byte{s.chunk(&chatDelta{}, &finish)}
	if s.wantUsage && s.usage != nil {
		out = append(out, mustMarshal(chatCompletion{ID: s.id, Object: "chat.completion.chunk", Created: s.created,
			Model: s.model, Choices: []chatChoice{}, Usage: s.usage.chat()}))
	}
	return out, nil
}

func (s *chunksFromGemini) chunk(d *chatDelta, finish *string) []byte {
	return mustMarshal(chatCompletion{ID: s.id, Object: "chat.completion.chunk", Created: s.created, Model: s.model,
		Choices: []chatChoice{{Delta: d, FinishReason: finish}}})
}
