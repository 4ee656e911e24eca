package providertest

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/sluicehq/sluice/pkg/providers"
	"github.com/sluicehq/sluice/pkg/tokens"
)

// How the conformance suite reads an answer, whole or streamed, in the client's API, as a
// client would, checking on the way that it is well formed.

// answer is what a client would make of an answer.
type answer struct {
	text       string
	finish     string
	usage      *tokens.Usage
	usageChunk bool // chat: a usage chunk was sent
	complete   bool // the answer has its final event (chat: a finish reason; Messages: message_stop)
}

// parseBody reads a whole answer in the suite's API.
func (s *suite) parseBody(t *testing.T, b []byte) answer {
	t.Helper()
	var a answer
	if s.endpoint == EndpointResponses {
		return parseResponsesBody(t, b)
	}
	if s.endpoint == EndpointChat {
		var c struct {
			Object  string `json:"object"`
			Choices []struct {
				Message struct {
					Role    string  `json:"role"`
					Content *string `json:"content"`
				} `json:"message"`
				FinishReason string `json:"finish_reason"`
			} `json:"choices"`
			Usage *chatUsage `json:"usage"`
		}
		if err := json.Unmarshal(b, &c); err != nil || c.Object != "chat.completion" || len(c.Choices) != 1 ||
			c.Choices[0].Message.Role != "assistant" || c.Choices[0].Message.Content == nil {
			t.Fatalf("answer is not a chat.completion with one choice: %.300s (%v)", b, err)
		}
		a.text, a.finish, a.complete = *c.Choices[0].Message.Content, c.Choices[0].FinishReason, true
		if c.Usage != nil {
			a.usage = &tokens.Usage{PromptTokens: c.Usage.PromptTokens, CompletionTokens: c.Usage.CompletionTokens}
			if c.Usage.TotalTokens != c.Usage.PromptTokens+c.Usage.CompletionTokens {
				t.Errorf("usage total_tokens = %d, want %d", c.Usage.TotalTokens, c.Usage.PromptTokens+c.Usage.CompletionTokens)
			}
		}
		return a
	}
	var m messagesAnswer
	if err := json.Unmarshal(b, &m); err != nil || m.Type != "message" || m.Role != "assistant" ||
		!strings.HasPrefix(m.ID, "msg_") || m.StopReason == nil {
		t.Fatalf("answer is not a Messages message: %.300s (%v)", b, err)
	}
	for _, c := range m.Content {
		if c.Type == "text" {
			a.text += c.Text
		}
	}
	a.finish, a.complete = *m.StopReason, true
	a.usage = &tokens.Usage{PromptTokens: m.Usage.InputTokens, CompletionTokens: m.Usage.OutputTokens}
	return a
}

type chatUsage struct {
	PromptTokens     int64 `json:"prompt_tokens"`
	CompletionTokens int64 `json:"completion_tokens"`
	TotalTokens      int64 `json:"total_tokens"`
}

type messagesUsage struct {
	InputTokens  int64 `json:"input_tokens"`
	OutputTokens int64 `json:"output_tokens"`
}

type messagesAnswer struct {
	ID      string `json:"id"`
	Type    string `json:"type"`
	Role    string `json:"role"`
	Content []struct {
		Type string `json:"type"`
		Text string `json:"text"`
	} `json:"content"`
	StopReason *string       `json:"stop_reason"`
	Usage      messagesUsage `json:"usage"`
}

// parseStream reads emitted events in the suite's API, checking that they are well formed
// and in order. With whole set, the stream must also be complete.
func (s *suite) parseStream(t *testing.T, events []providers.Event, whole bool) answer {
	t.Helper()
	var a answer
	switch s.endpoint {
	case EndpointResponses:
		a = parseResponsesStream(t, events)
	case EndpointChat:
		a = parseChatStream(t, events)
	default:
		a = parseMessagesStream(t, events)
	}
	if whole && !a.complete {
		t.Errorf("stream of %d events ended without its final event", len(events))
	}
	return a
}

func parseChatStream(t *testing.T, events []providers.Event) answer {
	t.Helper()
	var a answer
	for i, ev := range events {
		if ev.Name != "" {
			t.Errorf("chat event %d has name %q, want none", i, ev.Name)
		}
		if string(ev.Data) == "[DONE]" {
			t.Fatalf("chat event %d is [DONE]; Sluice writes that itself", i)
		}
		if a.usageChunk {
			t.Errorf("chat event %d follows the usage chunk", i)
		}
		var c struct {
			Object  string `json:"object"`
			Choices []struct {
				Delta struct {
					Role    string  `json:"role"`
					Content *string `json:"content"`
				} `json:"delta"`
				FinishReason *string `json:"finish_reason"`
			} `json:"choices"`
			Usage *chatUsage `json:"usage"`
		}
		if err := json.Unmarshal(ev.Data, &c); err != nil || c.Object != "chat.completion.chunk" {
			t.Fatalf("chat event %d is not a chat.completion.chunk: %.300s (%v)", i, ev.Data, err)
		}
		if c.Usage != nil && len(c.Choices) == 0 {
			a.usageChunk = true
			a.usage = &tokens.Usage{PromptTokens: c.Usage.PromptTokens, CompletionTokens: c.Usage.CompletionTokens}
			continue
		}
		if len(c.Choices) != 1 {
			t.Fatalf("chat event %d has %d choices, want 1", i, len(c.Choices))
		}
		ch := c.Choices[0]
		if i == 0 && ch.Delta.Role != "assistant" {
			t.Errorf("first chat event has role %q, want assistant", ch.Delta.Role)
		}
		if a.complete {
			t.Errorf("chat event %d follows the finish", i)
		}
		if ch.Delta.Content != nil {
			a.text += *ch.Delta.Content
		}
		if ch.FinishReason != nil {
			a.finish, a.complete = *ch.FinishReason, true
		}
	}
	return a
}

func parseMessagesStream(t *testing.T, events []providers.Event) answer {
	t.Helper()
	var a answer
	open := -1 // the open content block
	next := 0  // the index the next block must have
	var usage messagesUsage
	for i, ev := range events {
		var e struct {
			Type    string `json:"type"`
			Message *struct {
				ID    string        `json:"id"`
				Usage messagesUsage `json:"usage"`
			} `json:"message"`
			Index        int `json:"index"`
			ContentBlock *struct {
				Type string `json:"type"`
			} `json:"content_block"`
			Delta *struct {
				Type       string `json:"type"`
				Text       string `json:"text"`
				StopReason string `json:"stop_reason"`
			} `json:"delta"`
			Usage *messagesUsage `json:"usage"`
		}
		if err := json.Unmarshal(ev.Data, &e); err != nil || e.Type == "" {
			t.Fatalf("Messages event %d is not an event: %.300s (%v)", i, ev.Data, err)
		}
		if ev.Name != e.Type {
			t.Errorf("Messages event %d is named %q but has type %q", i, ev.Name, e.Type)
		}
		if a.complete {
			t.Errorf("Messages event %d follows message_stop", i)
		}
		if (i == 0) != (e.Type == "message_start") {
			t.Fatalf("Messages event %d is %s; a stream begins with exactly one message_start", i, e.Type)
		}
		switch e.Type {
		case "message_start":
			if e.Message == nil || !strings.HasPrefix(e.Message.ID, "msg_") {
				t.Errorf("message_start without a message with a msg_ id: %.300s", ev.Data)
			} else {
				usage = e.Message.Usage
			}
		case "content_block_start":
			if open >= 0 || e.Index != next || e.ContentBlock == nil {
				t.Errorf("content_block_start %d while block %d is open or out of order (want %d)", e.Index, open, next)
			}
			open, next = e.Index, next+1
		case "content_block_delta":
			if e.Index != open || e.Delta == nil {
				t.Errorf("content_block_delta for block %d while block %d is open", e.Index, open)
			} else if e.Delta.Type == "text_delta" {
				a.text += e.Delta.Text
			}
		case "content_block_stop":
			if e.Index != open {
				t.Errorf("content_block_stop for block %d while block %d is open", e.Index, open)
			}
			open = -1
		case "message_delta":
			if open >= 0 || e.Delta == nil || e.Usage == nil {
				t.Errorf("message_delta with block %d open or without delta and usage: %.300s", open, ev.Data)
				continue
			}
			a.finish = e.Delta.StopReason
			usage.OutputTokens = e.Usage.OutputTokens
			if e.Usage.InputTokens > 0 {
				usage.InputTokens = e.Usage.InputTokens
			}
			a.usage = &tokens.Usage{PromptTokens: usage.InputTokens, CompletionTokens: usage.OutputTokens}
		case "message_stop":
			if a.finish == "" {
				t.Errorf("message_stop before a message_delta with the stop reason")
			}
			a.complete = true
		}
	}
	return a
}
