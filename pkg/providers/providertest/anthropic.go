package providertest

import "fmt"

type anthropicMessage struct {
	ID           string           `json:"id"`
	Type         string           `json:"type"`
	Role         string           `json:"role"`
	Model        string           `json:"model"`
	Content      []anthropicBlock `json:"content"`
	StopReason   *string          `json:"stop_reason"`
	StopSequence *string          `json:"stop_sequence"`
	Usage        anthropicUsage   `json:"usage"`
}

type anthropicBlock struct {
	Type string `json:"type"`
	Text string `json:"text"`
}

type anthropicUsage struct {
	InputTokens  int `json:"input_tokens"`
	OutputTokens int `json:"output_tokens"`
}

// messagesReply answers POST /v1/messages. A stream sends message_start,
// content_block_start, one content_block_delta per piece, content_block_stop,
// message_delta (stop reason and output tokens) and message_stop.
func messagesReply(id int64, req *request, p prompt, c content) reply {
	stop := "end_turn"
	if c.cut {
		stop = "max_tokens"
	}
	msg := anthropicMessage{
		ID: fmt.Sprintf("msg_fake_%d", id), Type: "message", Role: "assistant", Model: req.Model,
		Content:    []anthropicBlock{{Type: "text", Text: c.value()}},
		StopReason: &stop,
		Usage:      anthropicUsage{InputTokens: p.tokens(), OutputTokens: c.tokens},
	}
	var r reply
	if !req.Stream {
		r = jsonReply(msg, c)
	} else {
		k := c.n()
		r = streamReply(k+5, func(i int) []byte {
			switch {
			case i == 0:
				start := msg
				start.Content, start.StopReason, start.Usage.OutputTokens = []anthropicBlock{}, nil, 0
				return event("message_start", map[string]any{"type": "message_start", "message": start})
			case i == 1:
				return event("content_block_start", map[string]any{"type": "content_block_start", "index": 0,
					"content_block": anthropicBlock{Type: "text"}})
			case i <= k+1:
				return event("content_block_delta", map[string]any{"type": "content_block_delta", "index": 0,
					"delta": map[string]any{"type": "text_delta", "text": c.piece(i - 2)}})
			case i == k+2:
				return event("content_block_stop", map[string]any{"type": "content_block_stop", "index": 0})
			case i == k+3:
				return event("message_delta", map[string]any{"type": "message_delta",
					"delta": map[string]any{"stop_reason": stop, "stop_sequence": nil},
					"usage": map[string]any{"output_tokens": c.tokens}})
			}
			return event("message_stop", map[string]any{"type": "message_stop"})
		})
	}
	r.promptTokens, r.completionTokens = msg.Usage.InputTokens, msg.Usage.OutputTokens
	return r
}
