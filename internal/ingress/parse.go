package ingress

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strings"
	"unicode/utf8"

	"github.com/sluicehq/sluice/pkg/jobs"
	"github.com/sluicehq/sluice/pkg/jsonscan"
)

// parsed is a validated request.
type parsed struct {
	model     string
	stream    bool
	wantUsage bool
	body      json.RawMessage
}

// readBody reads at most MaxBodyBytes of a JSON body: 413 beyond, 415 for another content type.
func (s *Server) readBody(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	if ct := r.Header.Get("Content-Type"); ct != "" {
		mt, _, err := mime.ParseMediaType(ct)
		if err != nil || (mt != "application/json" && !strings.HasSuffix(mt, "+json")) {
			return nil, apiError(http.StatusUnsupportedMediaType, "invalid_request_error", "unsupported_media_type",
				"The body must be JSON (Content-Type: application/json).")
		}
	}
	if r.ContentLength > s.maxBody {
		return nil, tooLarge(s.maxBody)
	}
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.maxBody))
	if err != nil {
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			return nil, tooLarge(s.maxBody)
		}
		return nil, badRequest("", "Could not read the request body.")
	}
	return b, nil
}

func tooLarge(limit int64) error {
	return apiError(http.StatusRequestEntityTooLarge, "invalid_request_error", "request_too_large",
		fmt.Sprintf("The request body is larger than the limit of %d bytes.", limit))
}

// parseRequest validates a body for endpoint.
func parseRequest(endpoint string, body []byte, allowStream bool) (*parsed, error) {
	body = bytes.TrimSpace(body)
	if len(body) == 0 || body[0] != '{' {
		return nil, badRequest("", "The body must be a JSON object.")
	}
	// encoding/json lets invalid UTF-8 through inside strings, but no upstream and no
	// Postgres text column takes it: refuse it here rather than fail the job later.
	if !utf8.Valid(body) {
		return nil, badRequest("", "The body must be valid UTF-8.")
	}
	// The body is forwarded untouched, so read its fields by their exact names, as the
	// upstream will. (A struct would match them case-insensitively: {"streAm":true} would
	// be validated as a stream here and sent upstream as none.) Only the members checked
	// here are looked at; the rest are not decoded. A repeated member counts as its last
	// occurrence, as in encoding/json and the upstreams' JSON parsers.
	if !json.Valid(body) {
		var v any
		return nil, badRequest("", "We could not parse the JSON body of your request: "+jsonProblem(json.Unmarshal(body, &v)))
	}
	var req struct{ model, stream, streamOptions, messages, maxTokens, prompt, input []byte }
	_ = jsonscan.Members(body, func(k, v []byte) bool { // an object: checked above
		switch string(k) {
		case "model":
			req.model = v
		case "stream":
			req.stream = v
		case "stream_options":
			req.streamOptions = v
		case "messages":
			req.messages = v
		case "max_tokens":
			req.maxTokens = v
		case "prompt":
			req.prompt = v
		case "input":
			req.input = v
		}
		return true
	})
	p := &parsed{body: body}
	if err := json.Unmarshal(req.model, &p.model); err != nil || strings.TrimSpace(p.model) == "" {
		return nil, badRequest("model", "'model' is required and must be a non-empty string.")
	}
	if !optionalJSON(req.stream, &p.stream) {
		return nil, badRequest("stream", "'stream' must be a boolean.")
	}
	if p.stream && !allowStream {
		return nil, badRequest("stream", "'stream' must be absent or false here.")
	}
	if !jsonscan.IsNull(req.streamOptions) {
		var include []byte
		_ = jsonscan.Members(req.streamOptions, func(k, v []byte) bool {
			if string(k) == "include_usage" {
				include = v
			}
			return true
		})
		if req.streamOptions[0] != '{' || !optionalJSON(include, &p.wantUsage) {
			return nil, badRequest("stream_options", "'stream_options' must be an object with a boolean 'include_usage'.")
		}
	}
	switch endpoint {
	case jobs.EndpointChat, jobs.EndpointMessages:
		n, bad := 0, -1
		if len(req.messages) == 0 || req.messages[0] != '[' {
			return nil, badRequest("messages", "'messages' is required and must be a non-empty array.")
		}
		_ = jsonscan.Elements(req.messages, func(m []byte) bool {
			if m[0] != '{' {
				bad = n
				return false
			}
			n++
			return true
		})
		if bad >= 0 {
			return nil, badRequest(fmt.Sprintf("messages[%d]", bad), "Each message must be an object.")
		}
		if n == 0 {
			return nil, badRequest("messages", "'messages' is required and must be a non-empty array.")
		}
		if endpoint == jobs.EndpointMessages {
			var n int
			if err := json.Unmarshal(req.maxTokens, &n); err != nil || n < 1 {
				return nil, badRequest("max_tokens", "'max_tokens' is required and must be a positive integer.")
			}
		}
	case jobs.EndpointCompletions:
		if jsonscan.IsNull(req.prompt) {
			return nil, badRequest("prompt", "'prompt' is required.")
		}
	case jobs.EndpointResponses:
		if err := checkResponses(body); err != nil {
			return nil, err
		}
	case jobs.EndpointEmbeddings:
		if p.stream {
			return nil, badRequest("stream", "Embeddings cannot be streamed.")
		}
		if jsonscan.IsNull(req.input) {
			return nil, badRequest("input", "'input' is required.")
		}
	default:
		return nil, badRequest("endpoint", fmt.Sprintf("Unknown endpoint %q.", endpoint))
	}
	return p, nil
}

// optionalJSON decodes raw into v unless it is absent or null; it reports whether raw was
// absent, null or a valid v.
func optionalJSON(raw json.RawMessage, v any) bool {
	return len(raw) == 0 || string(raw) == "null" || json.Unmarshal(raw, v) == nil
}

// jsonProblem describes a JSON error without echoing the input.
func jsonProblem(err error) string {
	if se, ok := errors.AsType[*json.SyntaxError](err); ok {
		return fmt.Sprintf("syntax error at byte %d.", se.Offset)
	}
	if te, ok := errors.AsType[*json.UnmarshalTypeError](err); ok {
		return fmt.Sprintf("'%s' has the wrong type.", te.Field)
	}
	return "invalid JSON."
}
