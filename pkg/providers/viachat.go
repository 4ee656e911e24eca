package providers

import (
	"context"
	"encoding/json"
)

// Serving another client API through an adapter's chat completions path: the openai
// adapter and the fake answer Messages clients this way, and every adapter without a
// native Responses API answers Responses clients this way, so that each translation is
// written once, against chat completions, and reused by every upstream.

// chatFunc is an adapter's chat completions path: its Do, called with a chat request.
type chatFunc func(ctx context.Context, req *Request, emit func(Event) error) (*Result, error)

// fromChat is one translation from chat completions into a client's API.
type fromChat struct {
	// answer translates a whole chat.completion into the client's answer.
	answer func(c *chatCompletion) (any, error)
	// chunk translates one chat.completion.chunk into the client's stream events.
	chunk func(data []byte) ([]Event, error)
	// end returns the client's closing events, once the chat stream has ended cleanly.
	end func() []Event
}

// viaChat calls chat with cr (streamed if the client's req is) and translates what comes
// back with tr. A chat stream that fails never gets tr's closing events. The Result keeps
// chat's usage, which is what the upstream reported.
func viaChat(ctx context.Context, provider string, chat chatFunc, cr *chatRequest, req *Request,
	emit func(Event) error, tr fromChat,
) (*Result, error) {
	cr.Stream = req.Stream
	cr.StreamOptions = nil
	if req.Stream {
		cr.StreamOptions = &streamOptions{IncludeUsage: true}
	}
	creq := &Request{Endpoint: "/v1/chat/completions", Body: mustMarshal(cr), Stream: req.Stream, WantUsageChunk: true}
	if !req.Stream {
		res, err := chat(ctx, creq, emit)
		if err != nil {
			return res, err
		}
		var c chatCompletion
		if err := json.Unmarshal(res.Body, &c); err != nil {
			return nil, badResponse(provider, "chat completion", err)
		}
		answer, err := tr.answer(&c)
		if err != nil {
			return nil, err
		}
		return &Result{StatusCode: res.StatusCode, Body: mustMarshal(answer), Usage: res.Usage}, nil
	}
	res, err := chat(ctx, creq, func(ev Event) error {
		events, err := tr.chunk(ev.Data)
		if err != nil {
			return err
		}
		return emitAll(emit, events)
	})
	if err != nil {
		return res, err
	}
	if err := emitAll(emit, tr.end()); err != nil {
		return res, &Error{Provider: provider, Err: err}
	}
	return res, nil
}

// emitAll emits events in order, stopping at emit's first error.
func emitAll(emit func(Event) error, events []Event) error {
	for _, e := range events {
		if err := emit(e); err != nil {
			return err
		}
	}
	return nil
}
