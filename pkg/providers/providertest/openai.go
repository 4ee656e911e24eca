package providertest

import (
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"math"
	"math/rand/v2"
	"time"
)

// embeddingDims is the length of every embedding vector.
const embeddingDims = 8

type openAIUsage struct {
	PromptTokens     int `json:"prompt_tokens"`
	CompletionTokens int `json:"completion_tokens"`
	TotalTokens      int `json:"total_tokens"`
}

// chatCompletion is a chat.completion or, with deltas, a chat.completion.chunk.
type chatCompletion struct {
	ID      string       `json:"id"`
	Object  string       `json:"object"`
	Created int64        `json:"created"`
	Model   string       `json:"model"`
	Choices []chatChoice `json:"choices"`
	Usage   *openAIUsage `json:"usage,omitempty"`
}

type chatChoice struct {
	Index        int          `json:"index"`
	Message      *chatMessage `json:"message,omitempty"`
	Delta        *chatMessage `json:"delta,omitempty"`
	FinishReason *string      `json:"finish_reason"`
}

type chatMessage struct {
	Role    string `json:"role,omitempty"`
	Content string `json:"content"`
}

// textCompletion is a text_completion, whole or as a stream chunk.
type textCompletion struct {
	ID      string       `json:"id"`
	Object  string       `json:"object"`
	Created int64        `json:"created"`
	Model   string       `json:"model"`
	Choices []textChoice `json:"choices"`
	Usage   *openAIUsage `json:"usage,omitempty"`
}

type textChoice struct {
	Text         string  `json:"text"`
	Index        int     `json:"index"`
	Logprobs     any     `json:"logprobs"`
	FinishReason *string `json:"finish_reason"`
}

// openAIParts returns the usage and finish reason of an answer.
func openAIParts(p prompt, c content) (*openAIUsage, string) {
	finish := "stop"
	if c.cut {
		finish = "length"
	}
	pt := p.tokens()
	return &openAIUsage{PromptTokens: pt, CompletionTokens: c.tokens, TotalTokens: pt + c.tokens}, finish
}

// withUsage sets the usage a reply reports.
func withUsage(r reply, u *openAIUsage) reply {
	r.promptTokens, r.completionTokens = u.PromptTokens, u.CompletionTokens
	return r
}

// chatReply answers POST /v1/chat/completions. A stream sends a role chunk,
// one chunk per content piece (the last with finish_reason), a usage chunk
// with no choices if stream_options.include_usage, and [DONE].
func chatReply(id int64, req *request, p prompt, c content) reply {
	usage, finish := openAIParts(p, c)
	base := chatCompletion{ID: fmt.Sprintf("chatcmpl-fake-%d", id), Created: time.Now().Unix(), Model: req.Model}
	if !req.Stream {
		base.Object, base.Usage = "chat.completion", usage
		base.Choices = []chatChoice{{Message: &chatMessage{Role: "assistant", Content: c.value()}, FinishReason: &finish}}
		return withUsage(jsonReply(base, c), usage)
	}
	base.Object = "chat.completion.chunk"
	chunk := func(m chatMessage, fin *string) []byte {
		v := base
		v.Choices = []chatChoice{{Delta: &m, FinishReason: fin}}
		return data(v)
	}
	k, n := c.n(), c.n()+2
	if req.StreamOptions.IncludeUsage {
		n++
	}
	return withUsage(streamReply(n, func(i int) []byte {
		switch {
		case i == 0:
			return chunk(chatMessage{Role: "assistant"}, nil)
		case i < k:
			return chunk(chatMessage{Content: c.piece(i - 1)}, nil)
		case i == k:
			return chunk(chatMessage{Content: c.piece(i - 1)}, &finish)
		case i < n-1:
			v := base
			v.Choices, v.Usage = []chatChoice{}, usage
			return data(v)
		}
		return doneEvent
	}), usage)
}

// completionReply answers POST /v1/completions, streamed like chatReply but
// without the role chunk.
func completionReply(id int64, req *request, p prompt, c content) reply {
	usage, finish := openAIParts(p, c)
	base := textCompletion{ID: fmt.Sprintf("cmpl-fake-%d", id), Object: "text_completion", Created: time.Now().Unix(), Model: req.Model}
	if !req.Stream {
		base.Usage = usage
		base.Choices = []textChoice{{Text: c.value(), FinishReason: &finish}}
		return withUsage(jsonReply(base, c), usage)
	}
	k, n := c.n(), c.n()+1
	if req.StreamOptions.IncludeUsage {
		n++
	}
	return withUsage(streamReply(n, func(i int) []byte {
		v := base
		switch {
		case i < k-1:
			v.Choices = []textChoice{{Text: c.piece(i)}}
		case i == k-1:
			v.Choices = []textChoice{{Text: c.piece(i), FinishReason: &finish}}
		case i < n-1:
			v.Choices, v.Usage = []textChoice{}, usage
		default:
			return doneEvent
		}
		return data(v)
	}), usage)
}

type embeddingList struct {
	Object string      `json:"object"`
	Data   []embedding `json:"data"`
	Model  string      `json:"model"`
	Usage  struct {
		PromptTokens int `json:"prompt_tokens"`
		TotalTokens  int `json:"total_tokens"`
	} `json:"usage"`
}

type embedding struct {
	Object    string `json:"object"`
	Index     int    `json:"index"`
	Embedding any    `json:"embedding"` // []float32, or base64 of little-endian float32s
}

// embeddingReply answers POST /v1/embeddings with one vector per input.
func embeddingReply(_ int64, req *request, p prompt, _ content) reply {
	v := embeddingList{Object: "list", Model: req.Model}
	for i, t := range p.texts {
		vec := Embed(t)
		var e any = vec
		if req.EncodingFormat == "base64" {
			b := make([]byte, 0, 4*len(vec))
			for _, f := range vec {
				b = binary.LittleEndian.AppendUint32(b, math.Float32bits(f))
			}
			e = base64.StdEncoding.EncodeToString(b)
		}
		v.Data = append(v.Data, embedding{Object: "embedding", Index: i, Embedding: e})
	}
	v.Usage.PromptTokens, v.Usage.TotalTokens = p.tokens(), p.tokens()
	r := jsonReply(v, content{})
	r.promptTokens = p.tokens()
	return r
}

// Embed returns the unit vector of 8 dimensions that the Upstream answers for
// the embedding input s. It depends only on s.
func Embed(s string) []float32 {
	h := fnv.New64a()
	_, _ = h.Write([]byte(s))
	r := rand.New(rand.NewPCG(h.Sum64(), 0))
	v := make([]float32, embeddingDims)
	var norm float64
	for i := range v {
		x := r.Float64()*2 - 1
		v[i], norm = float32(x), norm+x*x
	}
	for i := range v {
		v[i] = float32(float64(v[i]) / math.Sqrt(norm))
	}
	return v
}
