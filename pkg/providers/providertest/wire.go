package providertest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
)

// maxEchoWords caps how many words of the prompt an answer echoes.
const maxEchoWords = 200

// request is the union of the request bodies of every route.
type request struct {
	Model    string `json:"model"`
	Messages []struct {
		Role    string          `json:"role"`
		Content json.RawMessage `json:"content"`
	} `json:"messages"`
	System        json.RawMessage `json:"system"` // Anthropic
	Prompt        json.RawMessage `json:"prompt"` // completions
	Input         json.RawMessage `json:"input"`  // embeddings, responses
	Stream        bool            `json:"stream"`
	StreamOptions struct {
		IncludeUsage bool `json:"include_usage"`
	} `json:"stream_options"`
	MaxTokens      int    `json:"max_tokens"`
	EncodingFormat string `json:"encoding_format"`
	// responses
	Instructions    string `json:"instructions"`
	MaxOutputTokens int    `json:"max_output_tokens"`
}

// route is one provider endpoint: how to read its request, answer it, and shape its errors.
type route struct {
	parse     func(*request) (prompt, error)
	reply     func(id int64, req *request, p prompt, c content) reply
	errorBody func(code int, msg string) any
}

// routes maps a path without its /v1 prefix to its route.
var routes = map[string]route{
	"/chat/completions": {chatPrompt, chatReply, openAIError},
	"/completions":      {completionPrompt, completionReply, openAIError},
	"/embeddings":       {embeddingPrompt, embeddingReply, openAIError},
	"/messages":         {messagesPrompt, messagesReply, anthropicError},
	"/responses":        {responsesPrompt, responsesReply, openAIError},
}

// prompt is what an answer is computed from.
type prompt struct {
	texts []string // one per message (and system prompt), completion prompt or embedding input
	last  string   // the text the answer echoes
}

// tokens counts the prompt's tokens: its words plus 3 per text.
func (p prompt) tokens() int {
	n := 0
	for _, t := range p.texts {
		n += len(strings.Fields(t)) + 3
	}
	return n
}

// conversation reads a chat: an optional system prompt and at least one
// message. The answer echoes the last user message, or the last message if
// no message is from the user.
func conversation(req *request, system bool) (prompt, error) {
	var p prompt
	if system && len(req.System) > 0 {
		s, err := joinedText(req.System)
		if err != nil {
			return prompt{}, fmt.Errorf("system: %w", err)
		}
		if s != "" {
			p.texts = append(p.texts, s)
		}
	}
	if len(req.Messages) == 0 {
		return prompt{}, errors.New("messages: must not be empty")
	}
	lastUser := -1
	for i, m := range req.Messages {
		s, err := joinedText(m.Content)
		if err != nil {
			return prompt{}, fmt.Errorf("messages[%d].content: %w", i, err)
		}
		p.texts = append(p.texts, s)
		if m.Role == "user" {
			lastUser = len(p.texts) - 1
		}
	}
	p.last = p.texts[len(p.texts)-1]
	if lastUser >= 0 {
		p.last = p.texts[lastUser]
	}
	return p, nil
}

func chatPrompt(req *request) (prompt, error)     { return conversation(req, false) }
func messagesPrompt(req *request) (prompt, error) { return conversation(req, true) }

func completionPrompt(req *request) (prompt, error) { return list("prompt", req.Prompt) }
func embeddingPrompt(req *request) (prompt, error)  { return list("input", req.Input) }

// list reads a string or an array of strings; the answer echoes the last.
func list(field string, raw json.RawMessage) (prompt, error) {
	ts, err := texts(raw)
	if err == nil && len(ts) == 0 {
		err = errors.New("must not be empty")
	}
	if err != nil {
		return prompt{}, fmt.Errorf("%s: %w", field, err)
	}
	return prompt{texts: ts, last: ts[len(ts)-1]}, nil
}

// texts decodes null, a string, or an array of strings and {"type":"text","text":…}
// parts; parts of other types (images, tool calls) are skipped.
func texts(raw json.RawMessage) ([]string, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return []string{s}, nil
	}
	var parts []json.RawMessage
	if json.Unmarshal(raw, &parts) != nil {
		return nil, errors.New("must be a string or an array")
	}
	var out []string
	for _, raw := range parts {
		var part struct {
			Type string `json:"type"`
			Text string `json:"text"`
		}
		switch {
		case json.Unmarshal(raw, &s) == nil:
			out = append(out, s)
		case json.Unmarshal(raw, &part) != nil:
			return nil, errors.New("array elements must be strings or content parts")
		case part.Type == "text":
			out = append(out, part.Text)
		}
	}
	return out, nil
}

// joinedText decodes like texts and joins the pieces with newlines.
func joinedText(raw json.RawMessage) (string, error) {
	ts, err := texts(raw)
	return strings.Join(ts, "\n"), err
}

// content is an answer's text, delivered in pieces that concatenate to it.
type content struct {
	text   string   // the whole text; empty for big content
	pieces []string // text split for streaming
	big    int      // if > 0, the text is the first big bytes of filler repeated, never built whole
	tokens int      // words in the text
	cut    bool     // max_tokens shortened the text
}

// filler holds whole "fake " words, so every slice of it that starts at 0
// continues the same pattern; big answers are written from it, not copied.
var filler = bytes.Repeat([]byte("fake "), 13107) // 65535 bytes

// bigMarker stands in for big content while the surrounding JSON is rendered.
const bigMarker = "@@providertest-big-content@@"

// newContent echoes last: "Echo:" and its first maxEchoWords words, cut to
// maxTokens words if that is positive, in chunks pieces (0: one per word).
func newContent(last string, maxTokens, chunks int) content {
	words := strings.Fields(last)
	words = append([]string{"Echo:"}, words[:min(len(words), maxEchoWords)]...)
	var c content
	if maxTokens > 0 && len(words) > maxTokens {
		words, c.cut = words[:maxTokens], true
	}
	k := len(words)
	if chunks > 0 && chunks < k {
		k = chunks
	}
	for j := range k {
		piece := strings.Join(words[j*len(words)/k:(j+1)*len(words)/k], " ")
		if j < k-1 {
			piece += " "
		}
		c.pieces = append(c.pieces, piece)
	}
	c.text, c.tokens = strings.Join(words, " "), len(words)
	return c
}

// bigContent is n bytes of filler text.
func bigContent(n int) content {
	return content{big: n, tokens: (n + 4) / 5} // a trailing partial "fake " still counts as a word
}

// value is what a JSON body holds for the text: itself, or bigMarker.
func (c content) value() string {
	if c.big > 0 {
		return bigMarker
	}
	return c.text
}

// n is the number of pieces.
func (c content) n() int {
	if c.big > 0 {
		return (c.big + len(filler) - 1) / len(filler)
	}
	return len(c.pieces)
}

// bigPiece is piece i of big content, as a slice of filler.
func (c content) bigPiece(i int) []byte {
	return filler[:min(len(filler), c.big-i*len(filler))]
}

// piece is piece i of the text.
func (c content) piece(i int) string {
	if c.big > 0 {
		return string(c.bigPiece(i))
	}
	return c.pieces[i]
}

// reply is an answer ready to write as n frames: the SSE events of a stream,
// or the pieces of a JSON body.
type reply struct {
	stream           bool
	n                int
	frame            func(i int) []byte
	size             int // length of a JSON body; unused for streams
	promptTokens     int // usage the answer reports, added to Stats on success
	completionTokens int
}

// jsonReply renders v, which holds c.value() as its text, as a JSON body.
// Big content is spliced in from filler rather than rendered.
func jsonReply(v any, c content) reply {
	b := mustJSON(v)
	if c.big == 0 {
		return reply{n: 1, size: len(b), frame: func(int) []byte { return b }}
	}
	prefix, suffix, _ := bytes.Cut(b, []byte(bigMarker))
	n := c.n()
	return reply{n: n + 2, size: len(prefix) + c.big + len(suffix), frame: func(i int) []byte {
		switch i {
		case 0:
			return prefix
		case n + 1:
			return suffix
		}
		return c.bigPiece(i - 1)
	}}
}

// streamReply is a stream of n events.
func streamReply(n int, frame func(i int) []byte) reply {
	return reply{stream: true, n: n, frame: frame}
}

// doneEvent ends an OpenAI stream.
var doneEvent = []byte("data: [DONE]\n\n")

// data renders v as an unnamed SSE event (OpenAI).
func data(v any) []byte { return fmt.Appendf(nil, "data: %s\n\n", mustJSON(v)) }

// event renders v as a named SSE event (Anthropic).
func event(name string, v any) []byte {
	return fmt.Appendf(nil, "event: %s\ndata: %s\n\n", name, mustJSON(v))
}

// mustJSON marshals v, which is always one of this package's plain types, so
// an error is a bug.
func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("providertest: marshal %T: %v", v, err))
	}
	return b
}

// errorType is the error type both providers use for an HTTP status.
func errorType(code int) string {
	switch {
	case code == 401:
		return "authentication_error"
	case code == 404:
		return "not_found_error"
	case code == 429:
		return "rate_limit_error"
	case code >= 500:
		return "api_error"
	}
	return "invalid_request_error"
}

// openAIError is an OpenAI error body.
func openAIError(code int, msg string) any {
	typ := errorType(code)
	if code >= 500 {
		typ = "server_error"
	}
	return map[string]any{"error": map[string]any{"message": msg, "type": typ, "param": nil, "code": nil}}
}

// anthropicError is an Anthropic error body.
func anthropicError(code int, msg string) any {
	typ := errorType(code)
	if code == 503 {
		typ = "overloaded_error"
	}
	return map[string]any{"type": "error", "error": map[string]any{"type": typ, "message": msg}}
}
