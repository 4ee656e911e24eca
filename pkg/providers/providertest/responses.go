package providertest

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
)

// The OpenAI Responses API (POST /v1/responses), as an upstream that has it natively
// answers it: the same echo and token rule as chat, with instructions counted as one more
// text, and a stream of named events ending in response.completed (response.incomplete
// after a max_output_tokens cut).

// responsesPrompt reads a Responses request: instructions and an input that is a string or
// a list of message items (whose content is a string or input_text parts). The answer
// echoes the last user message. max_output_tokens cuts the answer as max_tokens does.
func responsesPrompt(req *request) (prompt, error) {
	var p prompt
	if req.Instructions != "" {
		p.texts = append(p.texts, req.Instructions)
	}
	var s string
	if json.Unmarshal(req.Input, &s) == nil {
		p.texts = append(p.texts, s)
		p.last = s
		req.MaxTokens = req.MaxOutputTokens
		return p, nil
	}
	var items []struct {
		Type    string          `json:"type"`
		Role    string          `json:"role"`
		Content json.RawMessage `json:"content"`
	}
	if err := json.Unmarshal(req.Input, &items); err != nil || len(items) == 0 {
		return prompt{}, errors.New("input: must be a string or a non-empty array of items")
	}
	for i, it := range items {
		if it.Type != "" && it.Type != "message" {
			continue // function calls and their outputs carry no text to echo
		}
		text, err := responsesText(it.Content)
		if err != nil {
			return prompt{}, fmt.Errorf("input[%d].content: %w", i, err)
		}
		p.texts = append(p.texts, text)
		if it.Role == "user" {
			p.last = text
		}
	}
	req.MaxTokens = req.MaxOutputTokens // newContent cuts by MaxTokens
	return p, nil
}

// responsesText joins a content's text: a string, or input_text / output_text parts.
func responsesText(raw json.RawMessage) (string, error) {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s, nil
	}
	var parts []struct {
		Type string `json:"type"`
		Text string `json:"text"`
	}
	if err := json.Unmarshal(raw, &parts); err != nil {
		return "", errors.New("must be a string or an array of content parts")
	}
	texts := make([]string, 0, len(parts))
	for _, pt := range parts {
		if pt.Type == "input_text" || pt.Type == "output_text" {
			texts = append(texts, pt.Text)
		}
	}
	return strings.Join(texts, "\n"), nil
}

type responsesObject struct {
	ID                string             `json:"id"`
	Object            string             `json:"object"`
	CreatedAt         int64              `json:"created_at"`
	Status            string             `json:"status"`
	IncompleteDetails *map[string]string `json:"incomplete_details"`
	Model             string             `json:"model"`
	Output            []responsesItem    `json:"output"`
	Usage             *responsesUsage    `json:"usage"`
}

type responsesItem struct {
	Type    string          `json:"type"`
	ID      string          `json:"id"`
	Status  string          `json:"status"`
	Role    string          `json:"role"`
	Content []responsesPart `json:"content"`
}

type responsesPart struct {
	Type        string `json:"type"`
	Text        string `json:"text"`
	Annotations []any  `json:"annotations"`
}

type responsesUsage struct {
	InputTokens  int `json:"input_tokens"`
	OutputTokens int `json:"output_tokens"`
	TotalTokens  int `json:"total_tokens"`
}

// responsesReply answers POST /v1/responses. A stream sends response.created,
// response.in_progress, output_item.added, content_part.added, one output_text.delta per
// piece, output_text.done, content_part.done, output_item.done and response.completed
// (or response.incomplete), each with its sequence_number.
func responsesReply(id int64, req *request, p prompt, c content) reply {
	status, details := "completed", (*map[string]string)(nil)
	if c.cut {
		status, details = "incomplete", &map[string]string{"reason": "max_output_tokens"}
	}
	pt := p.tokens()
	usage := &responsesUsage{InputTokens: pt, OutputTokens: c.tokens, TotalTokens: pt + c.tokens}
	msgID := fmt.Sprintf("msg_fake_%d", id)
	item := responsesItem{Type: "message", ID: msgID, Status: "completed", Role: "assistant",
		Content: []responsesPart{{Type: "output_text", Text: c.value(), Annotations: []any{}}}}
	done := responsesObject{ID: fmt.Sprintf("resp_fake_%d", id), Object: "response", CreatedAt: time.Now().Unix(),
		Status: status, IncompleteDetails: details, Model: req.Model, Output: []responsesItem{item}, Usage: usage}
	var r reply
	if !req.Stream {
		r = jsonReply(done, c)
	} else {
		started := done
		started.Status, started.IncompleteDetails, started.Output, started.Usage = "in_progress", nil, []responsesItem{}, nil
		k := c.n()
		ev := func(i int, typ string, fields map[string]any) []byte {
			fields["type"], fields["sequence_number"] = typ, i
			return event(typ, fields)
		}
		r = streamReply(k+8, func(i int) []byte {
			at := map[string]any{"item_id": msgID, "output_index": 0, "content_index": 0}
			switch {
			case i == 0:
				return ev(i, "response.created", map[string]any{"response": started})
			case i == 1:
				return ev(i, "response.in_progress", map[string]any{"response": started})
			case i == 2:
				open := item
				open.Status, open.Content = "in_progress", []responsesPart{}
				return ev(i, "response.output_item.added", map[string]any{"output_index": 0, "item": open})
			case i == 3:
				at["part"] = responsesPart{Type: "output_text", Annotations: []any{}}
				return ev(i, "response.content_part.added", at)
			case i < k+4:
				at["delta"] = c.piece(i - 4)
				return ev(i, "response.output_text.delta", at)
			case i == k+4:
				at["text"] = c.text
				return ev(i, "response.output_text.done", at)
			case i == k+5:
				at["part"] = responsesPart{Type: "output_text", Text: c.text, Annotations: []any{}}
				return ev(i, "response.content_part.done", at)
			case i == k+6:
				return ev(i, "response.output_item.done", map[string]any{"output_index": 0, "item": item})
			}
			typ := "response.completed"
			if c.cut {
				typ = "response.incomplete"
			}
			return ev(i, typ, map[string]any{"response": done})
		})
	}
	r.promptTokens, r.completionTokens = usage.InputTokens, usage.OutputTokens
	return r
}
