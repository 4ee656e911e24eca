package providers

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/sluicehq/sluice/pkg/httpbody"
	"github.com/sluicehq/sluice/pkg/jsonscan"
	"github.com/sluicehq/sluice/pkg/secret"
	"github.com/sluicehq/sluice/pkg/tokens"
)

// OpenAI calls an OpenAI-compatible upstream: OpenAI itself, or xAI, DeepSeek, Groq,
// Mistral, OpenRouter, vLLM or Ollama by base URL, or an Azure OpenAI deployment (see
// NewAzure). It passes chat completions, completions and embeddings through, and answers
// Messages clients (/v1/messages) by translating to and from chat completions.
type OpenAI struct {
	name    string // the provider named in errors: "openai" or "azure"
	client  *http.Client
	baseURL string // e.g. https://api.openai.com/v1; may end in a query (Azure's api-version)
	apiKey  secret.Secret
	limits  Limits
	// azure sends the key in an api-key header instead of Authorization: Bearer.
	azure bool
	// maxCompletion sends a translated request's cap as max_completion_tokens, which OpenAI's
	// reasoning models require, rather than max_tokens, which other compatible servers know.
	maxCompletion bool
	// nativeResponses passes /v1/responses through: the upstream has the Responses API.
	// Otherwise Responses calls are translated to chat completions.
	nativeResponses bool
}

// NewOpenAI returns an adapter for the upstream at baseURL (what the official SDK takes,
// ending in /v1), using the shared client. A base URL on an Azure OpenAI host
// (*.openai.azure.com, *.cognitiveservices.azure.com) is treated as NewAzure treats it.
// Responses calls are translated to chat completions unless the adapter comes from a
// Registry that names the upstream's host in WithNativeResponses.
func NewOpenAI(client *http.Client, baseURL string, apiKey secret.Secret, limits Limits) *OpenAI {
	o := &OpenAI{name: openaiName, client: client, baseURL: trimBase(baseURL), apiKey: apiKey, limits: limits.withDefaults()}
	if u, err := url.Parse(baseURL); err == nil {
		host := strings.ToLower(u.Hostname())
		o.azure = strings.HasSuffix(host, ".openai.azure.com") || strings.HasSuffix(host, ".cognitiveservices.azure.com")
		o.maxCompletion = o.azure || host == "api.openai.com"
	}
	return o
}

// NewAzure returns an adapter for an Azure OpenAI deployment. baseURL names the deployment
// and the API version, as in
// https://RES.openai.azure.com/openai/deployments/DEPLOYMENT?api-version=2024-10-21 (or the
// v1 API, https://RES.openai.azure.com/openai/v1); each endpoint's path is inserted before the
// query, and the key goes in the api-key header. It fails if baseURL is not an absolute
// http(s) URL.
func NewAzure(client *http.Client, baseURL string, apiKey secret.Secret, limits Limits) (*OpenAI, error) {
	u, err := url.Parse(baseURL)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return nil, fmt.Errorf("azure base URL must be an absolute http(s) URL")
	}
	return &OpenAI{name: azureName, client: client, baseURL: trimBase(baseURL), apiKey: apiKey,
		limits: limits.withDefaults(), azure: true, maxCompletion: true}, nil
}

const (
	openaiName = "openai"
	azureName  = "azure"
)

// trimBase drops a trailing slash from a base URL's path, keeping any query.
func trimBase(baseURL string) string {
	path, query, hasQuery := strings.Cut(baseURL, "?")
	path = strings.TrimSuffix(path, "/")
	if hasQuery {
		return path + "?" + query
	}
	return path
}

// endpointURL is the base URL with path appended before its query, if it has one.
func (o *OpenAI) endpointURL(path string) string {
	base, query, hasQuery := strings.Cut(o.baseURL, "?")
	if hasQuery {
		return base + path + "?" + query
	}
	return base + path
}

// Do implements Provider. A Messages or translated Responses request that chat
// completions cannot express (a document block, a server or built-in tool) is a 400
// *Error, without calling upstream.
func (o *OpenAI) Do(ctx context.Context, req *Request, emit func(Event) error) (*Result, error) {
	switch req.Endpoint {
	case "/v1/messages":
		return o.messages(ctx, req, emit)
	case endpointResponses:
		return o.responses(ctx, req, emit)
	}
	body := req.Body
	if req.Stream {
		var err error
		if body, err = withIncludeUsage(body); err != nil {
			return nil, &Error{Provider: o.name, StatusCode: http.StatusBadRequest, Message: "body is not a JSON object"}
		}
	}
	return o.post(ctx, req.Endpoint, body, req.Stream, func(status int, r io.Reader) (*Result, error) {
		if req.Stream {
			return o.stream(r, req.WantUsageChunk, emit)
		}
		b, err := readAll(r, o.limits.MaxResponseBytes)
		if err != nil {
			return nil, &Error{Provider: o.name, Err: readErr(err)}
		}
		usage, err := answerUsage(b)
		if err != nil {
			return nil, &Error{Provider: o.name, Err: fmt.Errorf("%w: %v", ErrBadResponse, err)}
		}
		return &Result{StatusCode: status, Body: b, Usage: usage}, nil
	})
}

// post sends body to endpoint and hands a 2xx answer's body to read. It owns the response
// and releases it whatever read does.
func (o *OpenAI) post(ctx context.Context, endpoint string, body []byte, stream bool,
	read func(status int, body io.Reader) (*Result, error),
) (*Result, error) {
	target := o.endpointURL(strings.TrimPrefix(endpoint, "/v1"))
	resp, br, stop, err := send(ctx, o.client, o.name, o.limits, func(ctx context.Context) (*http.Request, error) { //nolint:bodyclose // released by httpbody.Close, the one release helper
		r, err := http.NewRequestWithContext(ctx, http.MethodPost, target, bytes.NewReader(body))
		if err != nil {
			return nil, err
		}
		r.Header.Set("Content-Type", "application/json")
		if stream {
			r.Header.Set("Accept", "text/event-stream")
		}
		switch {
		case o.apiKey == "":
		case o.azure:
			r.Header.Set("Api-Key", o.apiKey.Reveal())
		default:
			r.Header.Set("Authorization", "Bearer "+o.apiKey.Reveal())
		}
		return r, nil
	})
	if err != nil {
		return nil, err
	}
	defer stop()
	defer httpbody.Close(resp)
	if resp.StatusCode/100 != 2 {
		return nil, statusError(o.name, resp, br)
	}
	return read(resp.StatusCode, br)
}

// stream forwards each chunk and keeps the usage from the final chunk. A stream that ends
// without "data: [DONE]" is ErrTruncated.
func (o *OpenAI) stream(r io.Reader, wantUsage bool, emit func(Event) error) (*Result, error) {
	sr := newSSEReader(r, o.limits.MaxLineBytes)
	res := &Result{StatusCode: http.StatusOK}
	for {
		ev, err := sr.next()
		if err != nil {
			return res, streamReadError(o.name, err)
		}
		if string(ev.Data) == "[DONE]" {
			return res, nil
		}
		var chunk struct {
			Choices []json.RawMessage `json:"choices"`
			Usage   *tokens.Usage     `json:"usage"`
			Error   *struct {
				Message string `json:"message"`
				Type    string `json:"type"`
			} `json:"error"`
		}
		if err := json.Unmarshal(ev.Data, &chunk); err != nil {
			return res, badResponse(o.name, "stream chunk", err)
		}
		if chunk.Error != nil {
			return res, &Error{Provider: o.name, StatusCode: http.StatusBadGateway, Type: chunk.Error.Type,
				Message: chunk.Error.Message}
		}
		if chunk.Usage != nil {
			res.Usage = chunk.Usage
			if len(chunk.Choices) == 0 && !wantUsage {
				continue // Sluice asked for this chunk; the client did not
			}
		}
		if err := emit(Event{Data: ev.Data}); err != nil {
			return res, &Error{Provider: o.name, Err: err}
		}
	}
}

// answerUsage checks that b is a JSON object and returns the usage at its top level, if
// any. It decodes only the usage: the rest of the answer is forwarded as it is.
func answerUsage(b []byte) (*tokens.Usage, error) {
	if !json.Valid(b) {
		var v any
		return nil, json.Unmarshal(b, &v) // the decoder's error says where
	}
	var raw []byte
	if err := jsonscan.Members(b, func(k, v []byte) bool {
		if string(k) == "usage" {
			raw = v // the last one wins, as with encoding/json
		}
		return true
	}); err != nil {
		return nil, err
	}
	if jsonscan.IsNull(raw) {
		return nil, nil
	}
	var u tokens.Usage
	if err := json.Unmarshal(raw, &u); err != nil {
		return nil, fmt.Errorf("usage: %w", err)
	}
	return &u, nil
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
