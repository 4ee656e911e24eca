package providers

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/sluicehq/sluice/pkg/secret"
)

// OpenAI calls an OpenAI-compatible upstream: OpenAI itself, or xAI, DeepSeek, Groq,
// Mistral, OpenRouter, vLLM or Ollama by base URL.
type OpenAI struct {
	client  *http.Client
	baseURL string // e.g. https://api.openai.com/v1
	apiKey  secret.Secret
	limits  Limits
}

// NewOpenAI returns an adapter for the upstream at baseURL (what the official SDK takes,
// ending in /v1), using the shared client.
func NewOpenAI(client *http.Client, baseURL string, apiKey secret.Secret, limits Limits) *OpenAI {
	return &OpenAI{client: client, baseURL: strings.TrimSuffix(baseURL, "/"), apiKey: apiKey, limits: limits.withDefaults()}
}

const openaiName = "openai"

// Do implements Provider.
func (o *OpenAI) Do(ctx context.Context, req *Request, emit func(Event) error) (*Result, error) {
	path := strings.TrimPrefix(req.Endpoint, "/v1")
	body := req.Body
	if req.Stream {
		var err error
		if body, err = withIncludeUsage(body); err != nil {
			return nil, &Error{Provider: openaiName, StatusCode: http.StatusBadRequest, Message: "body is not a JSON object"}
		}
	}
	resp, br, stop, err := send(ctx, o.client, openaiName, o.limits, func(ctx context.Context) (*http.Request, error) {
		r, err := http.NewRequestWithContext(ctx, http.MethodPost, o.baseURL+path, bytes.NewReader(body))
		if err != nil {
			return nil, err
		}
		r.Header.Set("Content-Type", "application/json")
		if req.Stream {
			r.Header.Set("Accept", "text/event-stream")
		}
		if o.apiKey != "" {
			r.Header.Set("Authorization", "Bearer "+o.apiKey.Reveal())
		}
		return r, nil
	})
	if err != nil {
		return nil, err
	}
	defer stop()
	defer closeBody(resp)
	if resp.StatusCode/100 != 2 {
		return nil, statusError(openaiName, resp, br)
	}
	if req.Stream {
		return o.stream(br, req.WantUsageChunk, emit)
	}
	b, err := readAll(br, o.limits.MaxResponseBytes)
	if err != nil {
		return nil, &Error{Provider: openaiName, Err: readErr(err)}
	}
	var parsed struct {
		Usage *Usage `json:"usage"`
	}
	if err := json.Unmarshal(b, &parsed); err != nil {
		return nil, &Error{Provider: openaiName, Err: fmt.Errorf("%w: %v", ErrBadResponse, err)}
	}
	return &Result{StatusCode: resp.StatusCode, Body: b, Usage: parsed.Usage}, nil
}

// stream forwards each chunk and keeps the usage from the final chunk. A stream that ends
// without "data: [DONE]" is ErrTruncated.
func (o *OpenAI) stream(r io.Reader, wantUsage bool, emit func(Event) error) (*Result, error) {
	sr := newSSEReader(r, o.limits.MaxLineBytes)
	res := &Result{StatusCode: http.StatusOK}
	for {
		ev, err := sr.next()
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = ErrTruncated
			}
			return res, &Error{Provider: openaiName, Err: readErr(err)}
		}
		if string(ev.Data) == "[DONE]" {
			return res, nil
		}
		var chunk struct {
			Choices []json.RawMessage `json:"choices"`
			Usage   *Usage            `json:"usage"`
			Error   *struct {
				Message string `json:"message"`
				Type    string `json:"type"`
			} `json:"error"`
		}
		if err := json.Unmarshal(ev.Data, &chunk); err != nil {
			return res, &Error{Provider: openaiName, Err: fmt.Errorf("%w: stream chunk: %v", ErrBadResponse, err)}
		}
		if chunk.Error != nil {
			return res, &Error{Provider: openaiName, StatusCode: http.StatusBadGateway, Type: chunk.Error.Type,
				Message: chunk.Error.Message}
		}
		if chunk.Usage != nil {
			res.Usage = chunk.Usage
			if len(chunk.Choices) == 0 && !wantUsage {
				continue // Sluice asked for this chunk; the client did not
			}
		}
		if err := emit(Event{Data: ev.Data}); err != nil {
			return res, &Error{Provider: openaiName, Err: err}
		}
	}
}

// withIncludeUsage sets stream_options.include_usage, keeping the client's other options.
func withIncludeUsage(body []byte) ([]byte, error) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(body, &m); err != nil {
		return nil, err
	}
	opts := map[string]json.RawMessage{}
	if raw, ok := m["stream_options"]; ok && string(raw) != "null" {
		if err := json.Unmarshal(raw, &opts); err != nil {
			return nil, err
		}
	}
	opts["include_usage"] = json.RawMessage("true")
	b, err := json.Marshal(opts)
	if err != nil {
		return nil, err
	}
	m["stream_options"] = b
	return json.Marshal(m)
}

// readErr names a body that ended early.
func readErr(err error) error {
	if errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("%w: %v", ErrTruncated, err)
	}
	return err
}
