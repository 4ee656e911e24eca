package providers

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
)

// Helpers shared by the translations between chat completions and the other APIs
// (translate_anthropic.go, translate_messages.go, translate_gemini.go).

// deref is *p, or the zero value if p is nil.
func deref[T any](p *T) T {
	if p == nil {
		var zero T
		return zero
	}
	return *p
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

// compactArgs renders a tool input as the arguments string of a chat tool call.
func compactArgs(input json.RawMessage) string {
	var buf bytes.Buffer
	if len(input) == 0 || json.Compact(&buf, input) != nil {
		return "{}"
	}
	return buf.String()
}
