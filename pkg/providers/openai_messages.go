package providers

import "context"

// messages answers a Messages client from an OpenAI-compatible upstream, through its chat
// completions path.
func (o *OpenAI) messages(ctx context.Context, req *Request, emit func(Event) error) (*Result, error) {
	return messagesViaChat(ctx, o.name, o.maxCompletion, o.Do, req, emit)
}

// messagesViaChat answers a Messages request through chat: the request goes up as a chat
// completion, and the answer (or stream) comes back as a Messages answer (or stream,
// ending with message_stop).
func messagesViaChat(ctx context.Context, provider string, maxCompletion bool, chat chatFunc,
	req *Request, emit func(Event) error,
) (*Result, error) {
	cr, err := chatFromMessages(provider, req.Body, maxCompletion)
	if err != nil {
		return nil, err
	}
	tr := newEventsFromChunks(provider)
	return viaChat(ctx, provider, chat, cr, req, emit, fromChat{
		answer: func(c *chatCompletion) (any, error) { return messageFromChat(provider, c) },
		chunk: func(data []byte) ([]Event, error) {
			events, _, err := tr.chunk(data)
			return events, err
		},
		end: func() []Event {
			events, _, _ := tr.chunk([]byte("[DONE]"))
			return events
		},
	})
}
