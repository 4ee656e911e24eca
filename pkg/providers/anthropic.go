package providers

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/sluicehq/sluice/pkg/httpbody"
	"github.com/sluicehq/sluice/pkg/secret"
	"github.com/sluicehq/sluice/pkg/tokens"
)

// Anthropic calls the Anthropic Messages API. It answers Messages clients (/v1/messages) by
// passing their requests and Anthropic's answers through untouched, and chat completions
// clients (/v1/chat/completions) by translating both ways, streams included, and Responses
// clients (/v1/responses) through that chat translation. It serves no other endpoint.
type Anthropic struct {
	client  *http.Client
	baseURL string // e.g. https://api.anthropic.com
	apiKey  secret.Secret
	limits  Limits
}

const (
	anthropicName    = "anthropic"
	anthropicVersion = "2023-06-01"
)

// NewAnthropic returns an adapter for the Anthropic API at baseURL (what the official SDK
// takes, such as https://api.anthropic.com; a trailing /v1 is tolerated), using the shared
// client.
func NewAnthropic(client *http.Client, baseURL string, apiKey secret.Secret, limits Limits) *Anthropic {
	base := strings.TrimSuffix(strings.TrimSuffix(baseURL, "/"), "/v1")
	return &Anthropic{client: client, baseURL: base, apiKey: apiKey, limits: limits.withDefaults()}
}

// Do implements Provider. A request for an endpoint other than /v1/messages,
// /v1/chat/completions and /v1/responses is a 404 *Error, and a request Anthropic cannot
// express (n > 1, an audio part, tool arguments that are not a JSON object, a built-in
// Responses tool) is a 400 *Error, both without calling upstream.
func (a *Anthropic) Do(ctx context.Context, req *Request, emit func(Event) error) (*Result, error) {
	switch req.Endpoint {
	case endpointResponses:
		return responsesViaChat(ctx, anthropicName, false, a.limits.MaxRecapBytes, a.Do, req, emit)
	case "/v1/messages":
		return a.post(ctx, req.Body, req.Stream, func(status int, r io.Reader) (*Result, error) {
			if req.Stream {
				return a.relay(r, emit)
			}
			return a.message(status, r)
		})
	case "/v1/chat/completions":
		mr, err := messagesFromChat(anthropicName, req.Body)
		if err != nil {
			return nil, err
		}
		mr.Stream = req.Stream
		created := time.Now().Unix()
		return a.post(ctx, mustMarshal(mr), req.Stream, func(status int, r io.Reader) (*Result, error) {
			if req.Stream {
				return a.chatStream(r, newChunksFromEvents(anthropicName, created, req.WantUsageChunk), emit)
			}
			return a.chatCompletion(status, r, created)
		})
	}
	return nil, unsupportedEndpoint(anthropicName, req.Endpoint)
}

// post sends a Messages request and hands a 2xx answer's body to read. It owns the response
// and releases it whatever read does.
func (a *Anthropic) post(ctx context.Context, body []byte, stream bool, read func(status int, body io.Reader) (*Result, error)) (*Result, error) {
	resp, br, stop, err := send(ctx, a.client, anthropicName, a.limits, func(ctx context.Context) (*http.Request, error) { //nolint:bodyclose // released by httpbody.Close, the one release helper
		r, err := http.NewRequestWithContext(ctx, http.MethodPost, a.baseURL+"/v1/messages", bytes.NewReader(body))
		if err != nil {
			return nil, err
		}
		r.Header.Set("Content-Type", "application/json")
		r.Header.Set("Anthropic-Version", anthropicVersion)
		if stream {
			r.Header.Set("Accept", "text/event-stream")
		}
		if a.apiKey != "" {
			r.Header.Set("X-Api-Key", a.apiKey.Reveal())
		}
		return r, nil
	})
	if err != nil {
		return nil, err
	}
	defer stop()
	defer httpbody.Close(resp)
	if resp.StatusCode/100 != 2 {
		return nil, statusError(anthropicName, resp, br)
	}
	return read(resp.StatusCode, br)
}

// readMessage reads a whole Messages answer.
func (a *Anthropic) readMessage(r io.Reader) ([]byte, *anthResponse, error) {
	b, err := readAll(r, a.limits.MaxResponseBytes)
	if err != nil {
		return nil, nil, &Error{Provider: anthropicName, Err: readErr(err)}
	}
	var m anthResponse
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, nil, badResponse(anthropicName, "message", err)
	}
	return b, &m, nil
}

// message answers a Messages client with Anthropic's answer as it is.
func (a *Anthropic) message(status int, r io.Reader) (*Result, error) {
	b, m, err := a.readMessage(r)
	if err != nil {
		return nil, err
	}
	return &Result{StatusCode: status, Body: b, Usage: m.Usage.total()}, nil
}

// chatCompletion answers a chat client with Anthropic's answer translated.
func (a *Anthropic) chatCompletion(status int, r io.Reader, created int64) (*Result, error) {
	_, m, err := a.readMessage(r)
	if err != nil {
		return nil, err
	}
	return &Result{StatusCode: status, Body: mustMarshal(chatFromMessage(m, created)), Usage: m.Usage.total()}, nil
}

// relay forwards each event of a Messages stream, message_stop included, and keeps the
// usage: input from message_start, output from message_delta. A stream that ends without
// message_stop is ErrTruncated; an error event is an *Error and is not forwarded.
func (a *Anthropic) relay(r io.Reader, emit func(Event) error) (*Result, error) {
	sr := newSSEReader(r, a.limits.MaxLineBytes)
	res := &Result{StatusCode: http.StatusOK}
	var usage anthUsageTracker
	for {
		ev, err := sr.next()
		if err != nil {
			return res, streamReadError(anthropicName, err)
		}
		var e anthEvent
		if err := json.Unmarshal(ev.Data, &e); err != nil {
			return res, badResponse(anthropicName, "stream event", err)
		}
		switch e.Type {
		case "message_start":
			if e.Message != nil {
				usage.start(e.Message.Usage)
			}
		case "message_delta":
			if e.Usage != nil {
				usage.delta(*e.Usage)
			}
		case "error":
			return res, anthStreamError(e.Error)
		}
		res.Usage = usage.result()
		if err := emit(Event{Name: cmp.Or(ev.Name, e.Type), Data: ev.Data}); err != nil {
			return res, &Error{Provider: anthropicName, Err: err}
		}
		if e.Type == "message_stop" {
			return res, nil
		}
	}
}

// chatStream translates a Messages stream into chat.completion.chunk events.
func (a *Anthropic) chatStream(r io.Reader, tr *chunksFromEvents, emit func(Event) error) (*Result, error) {
	sr := newSSEReader(r, a.limits.MaxLineBytes)
	res := &Result{StatusCode: http.StatusOK}
	for {
		ev, err := sr.next()
		if err != nil {
			return res, streamReadError(anthropicName, err)
		}
		chunks, done, err := tr.event(ev.Data)
		res.Usage = tr.usage.result()
		if err != nil {
			return res, err
		}
		for _, c := range chunks {
			if err := emit(Event{Data: c}); err != nil {
				return res, &Error{Provider: anthropicName, Err: err}
			}
		}
		if done {
			return res, nil
		}
	}
}

// anthStreamError is the *Error for an error event inside a Messages stream.
func anthStreamError(e *anthError) *Error {
	if e == nil {
		e = &anthError{Message: "error event in stream"}
	}
	return &Error{Provider: anthropicName, StatusCode: e.status(), Type: e.Type, Message: e.Message}
}

// anthUsageTracker keeps a Messages stream's usage: message_start reports the input,
// message_delta the output so far (and, in newer API versions, the input again).
type anthUsageTracker struct {
	usage anthUsage
	got   bool
}

func (t *anthUsageTracker) start(u anthUsage) { t.usage, t.got = u, true }

func (t *anthUsageTracker) delta(u anthUsage) {
	t.usage.OutputTokens = u.OutputTokens
	if u.InputTokens > 0 || u.CacheCreationInputTokens > 0 || u.CacheReadInputTokens > 0 {
		t.usage.InputTokens = u.InputTokens
		t.usage.CacheCreationInputTokens = u.CacheCreationInputTokens
		t.usage.CacheReadInputTokens = u.CacheReadInputTokens
	}
	t.got = true
}

// result is the usage so far, or nil before any was reported.
func (t *anthUsageTracker) result() *tokens.Usage {
	if !t.got {
		return nil
	}
	return t.usage.total()
}

// total is the usage to bill: every input token, cached or not, and the output tokens.
func (u anthUsage) total() *tokens.Usage {
	return &tokens.Usage{PromptTokens: u.prompt(), CompletionTokens: u.OutputTokens}
}
