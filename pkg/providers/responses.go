package providers

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/sluicehq/sluice/pkg/jsonscan"
	"github.com/sluicehq/sluice/pkg/tokens"
)

// How adapters serve the Responses API (/v1/responses): an openai channel whose upstream
// has it passes the call through (OpenAI.responses); every other adapter answers it with
// its own chat completions path (responsesViaChat), so that one translation, Responses ⇄
// chat, serves every upstream, and the chat ⇄ Messages and chat ⇄ Gemini translations are
// reused as they are.

// responsesViaChat answers a Responses request through chat: the request is translated
// into a chat completion (a 400 *Error, before any upstream call, if it asks for what chat
// completions cannot express), and the answer, or each chunk of the stream, back into the
// Responses shape. A stream's closing events and response.completed are sent only after
// chat's stream has ended cleanly; recap caps what they repeat (responsesFromChunks).
func responsesViaChat(ctx context.Context, provider string, maxCompletion bool, recap int, chat chatFunc,
	req *Request, emit func(Event) error,
) (*Result, error) {
	cr, in, err := chatFromResponses(provider, req.Body, maxCompletion)
	if err != nil {
		return nil, err
	}
	resp := newResponse(in)
	tr := newResponsesFromChunks(provider, resp, recap)
	return viaChat(ctx, provider, chat, cr, req, emit, fromChat{
		answer: func(c *chatCompletion) (any, error) { return responseFromChat(provider, c, resp) },
		chunk:  tr.chunk,
		end:    tr.end,
	})
}

// responses serves the Responses API: passed through to an upstream that has it (see
// WithNativeResponses), translated to chat completions for one that does not.
func (o *OpenAI) responses(ctx context.Context, req *Request, emit func(Event) error) (*Result, error) {
	if !o.nativeResponses {
		return responsesViaChat(ctx, o.name, o.maxCompletion, o.limits.MaxRecapBytes, o.Do, req, emit)
	}
	return o.post(ctx, endpointResponses, req.Body, req.Stream, func(status int, r io.Reader) (*Result, error) {
		if req.Stream {
			return o.responsesStream(r, emit)
		}
		b, err := readAll(r, o.limits.MaxResponseBytes)
		if err != nil {
			return nil, &Error{Provider: o.name, Err: readErr(err)}
		}
		usage, err := responseBodyUsage(b)
		if err != nil {
			return nil, &Error{Provider: o.name, Err: fmt.Errorf("%w: %v", ErrBadResponse, err)}
		}
		return &Result{StatusCode: status, Body: b, Usage: usage}, nil
	})
}

// responsesStream forwards each event of a native Responses stream and keeps the usage of
// its final response. It ends at response.completed or response.incomplete (forwarded); a
// response.failed or error event is an *Error and is not forwarded (the ingress ends the
// client's stream with its own response.failed); a stream that ends before either is
// ErrTruncated.
func (o *OpenAI) responsesStream(r io.Reader, emit func(Event) error) (*Result, error) {
	sr := newSSEReader(r, o.limits.MaxLineBytes)
	res := &Result{StatusCode: http.StatusOK}
	for {
		ev, err := sr.next()
		if err != nil {
			return res, streamReadError(o.name, err)
		}
		var e struct {
			Type     string `json:"type"`
			Code     string `json:"code"`    // error
			Message  string `json:"message"` // error
			Response *struct {
				Usage *responseUsage `json:"usage"`
				Error *responseError `json:"error"`
			} `json:"response"`
		}
		if err := json.Unmarshal(ev.Data, &e); err != nil {
			return res, badResponse(o.name, "stream event", err)
		}
		if e.Response != nil && e.Response.Usage != nil {
			res.Usage = e.Response.Usage.tokens()
		}
		switch e.Type {
		case "response.failed":
			perr := &Error{Provider: o.name, StatusCode: http.StatusBadGateway, Message: "the response failed"}
			if e.Response != nil && e.Response.Error != nil {
				perr.Code, perr.Message = e.Response.Error.Code, e.Response.Error.Message
			}
			return res, perr
		case "error":
			return res, &Error{Provider: o.name, StatusCode: http.StatusBadGateway, Code: e.Code,
				Message: cmp.Or(e.Message, "error event in stream")}
		}
		if err := emit(Event{Name: cmp.Or(ev.Name, e.Type), Data: ev.Data}); err != nil {
			return res, &Error{Provider: o.name, Err: err}
		}
		if e.Type == "response.completed" || e.Type == "response.incomplete" {
			return res, nil
		}
	}
}

// tokens is the usage to bill.
func (u *responseUsage) tokens() *tokens.Usage {
	return &tokens.Usage{PromptTokens: u.InputTokens, CompletionTokens: u.OutputTokens}
}

// responseBodyUsage checks that b is a JSON object and returns the usage of the response it
// holds, if any, decoding nothing else.
func responseBodyUsage(b []byte) (*tokens.Usage, error) {
	if !json.Valid(b) {
		var v any
		return nil, json.Unmarshal(b, &v)
	}
	var raw []byte
	if err := jsonscan.Members(b, func(k, v []byte) bool {
		if string(k) == "usage" {
			raw = v
		}
		return true
	}); err != nil {
		return nil, err
	}
	if jsonscan.IsNull(raw) {
		return nil, nil
	}
	var u responseUsage
	if err := json.Unmarshal(raw, &u); err != nil {
		return nil, fmt.Errorf("usage: %w", err)
	}
	return u.tokens(), nil
}

// RegistryOption changes what a Registry builds.
type RegistryOption func(*Registry)

// WithNativeResponses names the upstream hosts, as "host" or "host:port", whose
// OpenAI-compatible API serves /v1/responses itself: an openai channel on one of them
// passes Responses calls through; one elsewhere translates them to chat completions.
func WithNativeResponses(hosts ...string) RegistryOption {
	return func(r *Registry) {
		for _, h := range hosts {
			if h = strings.ToLower(strings.TrimSpace(h)); h != "" {
				r.nativeResponses = append(r.nativeResponses, h)
			}
		}
	}
}

// servesResponses reports whether baseURL's host is one of the native Responses hosts.
func (r *Registry) servesResponses(baseURL string) bool {
	u, err := url.Parse(baseURL)
	if err != nil {
		return false
	}
	host, hostname := strings.ToLower(u.Host), strings.ToLower(u.Hostname())
	for _, h := range r.nativeResponses {
		if h == host || h == hostname {
			return true
		}
	}
	return false
}
