package providers

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/sluicehq/sluice/pkg/httpbody"
	"github.com/sluicehq/sluice/pkg/secret"
)

// Gemini calls the Google Gemini API (generateContent). It answers chat completions clients
// by translating both ways, streams included, and Responses clients through that chat
// translation; it serves no other endpoint.
type Gemini struct {
	client  *http.Client
	baseURL string // e.g. https://generativelanguage.googleapis.com/v1beta
	apiKey  secret.Secret
	limits  Limits
}

const (
	geminiName    = "gemini"
	geminiBaseURL = "https://generativelanguage.googleapis.com/v1beta"
)

// NewGemini returns an adapter for the Gemini API at baseURL, such as
// https://generativelanguage.googleapis.com/v1beta (a base URL with no path gets /v1beta),
// using the shared client.
func NewGemini(client *http.Client, baseURL string, apiKey secret.Secret, limits Limits) *Gemini {
	base := strings.TrimSuffix(baseURL, "/")
	if u, err := url.Parse(base); err == nil && u.Host != "" && u.Path == "" {
		base += "/v1beta"
	}
	return &Gemini{client: client, baseURL: base, apiKey: apiKey, limits: limits.withDefaults()}
}

// Do implements Provider. A request for an endpoint other than /v1/chat/completions and
// /v1/responses is a 404 *Error, and a request Gemini cannot express is a 400 *Error, both
// without calling upstream.
func (g *Gemini) Do(ctx context.Context, req *Request, emit func(Event) error) (*Result, error) {
	if req.Endpoint == endpointResponses {
		return responsesViaChat(ctx, geminiName, false, g.limits.MaxRecapBytes, g.Do, req, emit)
	}
	if req.Endpoint != "/v1/chat/completions" {
		return nil, unsupportedEndpoint(geminiName, req.Endpoint)
	}
	gr, model, err := geminiFromChat(geminiName, req.Body)
	if err != nil {
		return nil, err
	}
	target := g.baseURL + "/models/" + url.PathEscape(model) + ":generateContent"
	if req.Stream {
		target = g.baseURL + "/models/" + url.PathEscape(model) + ":streamGenerateContent?alt=sse"
	}
	created := time.Now().Unix()
	resp, br, stop, err := send(ctx, g.client, geminiName, g.limits, func(ctx context.Context) (*http.Request, error) { //nolint:bodyclose // released by httpbody.Close, the one release helper
		r, err := http.NewRequestWithContext(ctx, http.MethodPost, target, bytes.NewReader(mustMarshal(gr)))
		if err != nil {
			return nil, err
		}
		r.Header.Set("Content-Type", "application/json")
		if req.Stream {
			r.Header.Set("Accept", "text/event-stream")
		}
		if g.apiKey != "" {
			r.Header.Set("X-Goog-Api-Key", g.apiKey.Reveal())
		}
		return r, nil
	})
	if err != nil {
		return nil, err
	}
	defer stop()
	defer httpbody.Close(resp)
	if resp.StatusCode/100 != 2 {
		return nil, geminiStatusError(resp, br)
	}
	if req.Stream {
		return g.stream(br, &chunksFromGemini{provider: geminiName, model: model, created: created,
			wantUsage: req.WantUsageChunk, newCallID: newCallID}, emit)
	}
	b, err := readAll(br, g.limits.MaxResponseBytes)
	if err != nil {
		return nil, &Error{Provider: geminiName, Err: readErr(err)}
	}
	var parsed geminiResponse
	if err := json.Unmarshal(b, &parsed); err != nil {
		return nil, badResponse(geminiName, "answer", err)
	}
	c, err := chatFromGemini(geminiName, &parsed, model, created, newCallID)
	if err != nil {
		return nil, err
	}
	return &Result{StatusCode: resp.StatusCode, Body: mustMarshal(c), Usage: parsed.UsageMetadata.total()}, nil
}

// stream translates a Gemini stream into chat.completion.chunk events.
func (g *Gemini) stream(r io.Reader, tr *chunksFromGemini, emit func(Event) error) (*Result, error) {
	sr := newSSEReader(r, g.limits.MaxLineBytes)
	res := &Result{StatusCode: http.StatusOK}
	forward := func(chunks [][]byte) error {
		for _, c := range chunks {
			if err := emit(Event{Data: c}); err != nil {
				return &Error{Provider: geminiName, Err: err}
			}
		}
		return nil
	}
	for {
		ev, err := sr.next()
		if errors.Is(err, io.EOF) { // a clean end: complete only after a finish reason
			chunks, err := tr.end()
			if err == nil {
				err = forward(chunks)
			}
			if err != nil {
				return res, err
			}
			return res, nil
		}
		if err != nil {
			return res, streamReadError(geminiName, err)
		}
		chunks, err := tr.event(ev.Data)
		res.Usage = tr.usage.total()
		if err != nil {
			return res, err
		}
		if err := forward(chunks); err != nil {
			return res, err
		}
	}
}

// geminiStatusError is statusError plus Gemini's retry hint, which it gives in the error's
// details (a google.rpc.RetryInfo retryDelay such as "37s") rather than in Retry-After.
func geminiStatusError(resp *http.Response, body io.Reader) *Error {
	b, _ := io.ReadAll(io.LimitReader(body, 64<<10))
	e := statusError(geminiName, resp, bytes.NewReader(b))
	var shape struct {
		Error struct {
			Details []struct {
				Type       string `json:"@type"`
				RetryDelay string `json:"retryDelay"`
				Reason     string `json:"reason"`
			} `json:"details"`
		} `json:"error"`
	}
	if json.Unmarshal(b, &shape) == nil {
		for _, d := range shape.Error.Details {
			if strings.HasSuffix(d.Type, "google.rpc.RetryInfo") && e.RetryAfter == 0 {
				if delay, err := time.ParseDuration(d.RetryDelay); err == nil && delay > 0 {
					e.RetryAfter = delay
				}
			}
			if strings.HasSuffix(d.Type, "google.rpc.ErrorInfo") && d.Reason == "API_KEY_INVALID" {
				e.Code = d.Reason // the one reason that means the channel's key is bad
			}
		}
	}
	return e
}

// newCallID names a tool call Gemini left unnamed.
func newCallID() string { return "call_" + rand.Text()[:16] }
