package providers

import (
	"context"
	"encoding/json"
)

// messages answers a Messages client from an OpenAI-compatible upstream, through its chat
// completions path.
func (o *OpenAI) messages(ctx context.Context, req *Request, emit func(Event) error) (*Result, error) {
	return messagesViaChat(ctx, o.name, o.maxCompletion, o.Do, req, emit)
}

// messagesViaChat answers a Messages request through chat (an adapter's chat completions
// path): the request goes up as a chat completion, and the answer (or stream) comes back
// as a Messages answer (or stream, ending with message_stop). A chat stream that fails
// never gets its message_stop.
func messagesViaChat(ctx context.Context, provider string, maxCompletion bool, chat chatFunc,
	req *Request, emit func(Event) error,
) (*Result, error) {
	cr, err := chatFromMessages(provider, req.Body, maxCompletion)
	if err != nil {
		return nil, err
	}
	cr.Stream = req.Stream
	if req.Stream {
		cr.StreamOptions = &streamOptions{IncludeUsage: true}
	} else {
		cr.StreamOptions = nil
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
		m, err := messageFromChat(provider, &c)
		if err != nil {
			return nil, err
		}
		return &Result{StatusCode: res.StatusCode, Body: mustMarshal(m), Usage: res.Usage}, nil
	}
	tr := newEventsFromChunks(provider)
	res, err := chat(ctx, creq, func(ev Event) error {
		events, _, err := tr.chunk(ev.Data)
		if err != nil {
			return err
		}
		return emitAll(emit, events)
	})
	if err != nil {
		return res, err
	}
	events, _, _ := tr.chunk([]byte("[DONE]"))
	if err := emitAll(emit, events); err != nil {
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
