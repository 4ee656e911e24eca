package providers

import (
	"context"
	"encoding/json"
	"io"
	"net/http"

	"github.com/sluicehq/sluice/pkg/tokens"
)

// messages answers a Messages client from an OpenAI-compatible upstream: the request goes
// up as a chat completion, and the answer (or stream) comes back as a Messages answer (or
// stream, ending with message_stop).
func (o *OpenAI) messages(ctx context.Context, req *Request, emit func(Event) error) (*Result, error) {
	cr, err := chatFromMessages(o.name, req.Body, o.maxCompletion)
	if err != nil {
		return nil, err
	}
	cr.Stream = req.Stream
	if req.Stream {
		cr.StreamOptions = &streamOptions{IncludeUsage: true}
	} else {
		cr.StreamOptions = nil
	}
	return o.post(ctx, "/v1/chat/completions", mustMarshal(cr), req.Stream, func(status int, r io.Reader) (*Result, error) {
		if req.Stream {
			return o.messagesStream(r, emit)
		}
		b, err := readAll(r, o.limits.MaxResponseBytes)
		if err != nil {
			return nil, &Error{Provider: o.name, Err: readErr(err)}
		}
		var c chatCompletion
		if err := json.Unmarshal(b, &c); err != nil {
			return nil, badResponse(o.name, "chat completion", err)
		}
		m, err := messageFromChat(o.name, &c)
		if err != nil {
			return nil, err
		}
		var usage *tokens.Usage
		if c.Usage != nil {
			usage = &tokens.Usage{PromptTokens: c.Usage.PromptTokens, CompletionTokens: c.Usage.CompletionTokens}
		}
		return &Result{StatusCode: status, Body: mustMarshal(m), Usage: usage}, nil
	})
}

// messagesStream translates a chat.completion.chunk stream into a Messages stream. A stream
// that ends without [DONE] is ErrTruncated, and message_stop is then never sent.
func (o *OpenAI) messagesStream(r io.Reader, emit func(Event) error) (*Result, error) {
	sr := newSSEReader(r, o.limits.MaxLineBytes)
	tr := newEventsFromChunks(o.name)
	res := &Result{StatusCode: http.StatusOK}
	for {
		ev, err := sr.next()
		if err != nil {
			return res, streamReadError(o.name, err)
		}
		events, done, err := tr.chunk(ev.Data)
		res.Usage = tr.result()
		if err != nil {
			return res, err
		}
		for _, e := range events {
			if err := emit(e); err != nil {
				return res, &Error{Provider: o.name, Err: err}
			}
		}
		if done {
			return res, nil
		}
	}
}
