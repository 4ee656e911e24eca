package providertest

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// The Gemini API is served apart from ServeHTTP because its paths carry the model and the
// method ("/v1beta/models/gemini-2.0-flash:generateContent") rather than naming a route.
// ServeGemini repeats ServeHTTP's sequence (check, choose, wait, misbehave or deliver) with
// Gemini's request, answer and error shapes.

// geminiRequest is the part of a generateContent body the fake reads.
type geminiRequest struct {
	Contents []struct {
		Role  string       `json:"role"`
		Parts []geminiPart `json:"parts"`
	} `json:"contents"`
	SystemInstruction *struct {
		Parts []geminiPart `json:"parts"`
	} `json:"systemInstruction"`
	GenerationConfig struct {
		MaxOutputTokens int `json:"maxOutputTokens"`
	} `json:"generationConfig"`
}

type geminiPart struct {
	Text string `json:"text,omitempty"`
}

// geminiAnswer is a GenerateContentResponse: a whole answer or one stream event.
type geminiAnswer struct {
	Candidates    []geminiCandidate `json:"candidates"`
	UsageMetadata geminiUsage       `json:"usageMetadata"`
	ModelVersion  string            `json:"modelVersion"`
	ResponseID    string            `json:"responseId"`
}

type geminiCandidate struct {
	Content struct {
		Role  string       `json:"role"`
		Parts []geminiPart `json:"parts"`
	} `json:"content"`
	FinishReason string `json:"finishReason,omitempty"`
	Index        int    `json:"index"`
}

type geminiUsage struct {
	PromptTokenCount     int `json:"promptTokenCount"`
	CandidatesTokenCount int `json:"candidatesTokenCount,omitempty"`
	TotalTokenCount      int `json:"totalTokenCount"`
}

// ServeGemini answers the Gemini API: POST …/models/{model}:generateContent and
// …/models/{model}:streamGenerateContent?alt=sse, in the mode chosen as for ServeHTTP (the
// X-Fake-Mode header, then a model such as "gemini-2.0-flash:429", then the mix). It counts
// in Stats like the other routes, and answers like them: the content echoes the last user
// text, tokens are counted in words (the system instruction counts as one more text), a
// maxOutputTokens smaller than the answer cuts it and finishes with MAX_TOKENS, and a
// stream's last event carries the finishReason and the full usageMetadata. Errors have
// Gemini's shape; a 429 gives its retry delay in the error details, as Gemini does, not
// in Retry-After.
func (u *Upstream) ServeGemini(w http.ResponseWriter, r *http.Request) {
	_, target, ok := strings.Cut(r.URL.Path, "/models/")
	i := strings.LastIndexByte(target, ':')
	if !ok || i < 0 {
		writeJSON(w, http.StatusNotFound, geminiError(http.StatusNotFound, "unknown path "+r.URL.Path, 0))
		return
	}
	model, method := target[:i], target[i+1:]
	stream := method == "streamGenerateContent"
	switch {
	case r.Method != http.MethodPost:
		writeJSON(w, http.StatusMethodNotAllowed, geminiError(http.StatusMethodNotAllowed, "use POST", 0))
		return
	case method != "generateContent" && !stream:
		writeJSON(w, http.StatusNotFound, geminiError(http.StatusNotFound, "unknown method "+method, 0))
		return
	case stream && r.URL.Query().Get("alt") != "sse":
		writeJSON(w, http.StatusBadRequest, geminiError(http.StatusBadRequest, "the fake streams only with alt=sse", 0))
		return
	}
	var req geminiRequest
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxRequestBytes))
	if err == nil {
		err = json.Unmarshal(body, &req)
	}
	var p prompt
	if err == nil {
		p, err = geminiPrompt(&req)
	}
	mode := ModeOK
	if err == nil {
		mode, err = u.choose(r.Header.Get("X-Fake-Mode"), model)
	}
	if err != nil {
		writeJSON(w, http.StatusBadRequest, geminiError(http.StatusBadRequest, err.Error(), 0))
		return
	}
	u.requests[mode.index()].Add(1)

	if err := u.pause(r.Context(), u.latency()); err != nil {
		u.abandon(w, err)
		return
	}
	if code := mode.status(); code != 0 {
		var retry time.Duration
		if code == http.StatusTooManyRequests {
			retry = time.Duration(u.cfg.RetryAfter) * time.Second
		}
		w.Header().Set("X-Fake-Mode", string(mode))
		writeJSON(w, code, geminiError(code, "fake upstream: mode "+string(mode), retry))
		return
	}
	switch mode {
	case ModeReset:
		cut(w, true)
	case ModeHang:
		u.abandon(w, u.pause(r.Context(), -1))
	case ModeGarbage:
		w.Header().Set("X-Fake-Mode", string(mode))
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusOK)
		_, _ = io.WriteString(w, `{"candidates":[{"content":{"parts":[{"text":"unterminated`+"\x00}]")
	default:
		w.Header().Set("X-Fake-Mode", string(mode))
		c := newContent(p.last, req.GenerationConfig.MaxOutputTokens, u.cfg.StreamChunks)
		if mode == ModeBig {
			c = bigContent(u.cfg.BigBytes)
		}
		u.deliver(w, r, geminiReply(u.nextID(), model, stream, p, c), mode)
	}
}

// geminiPrompt reads the conversation: the system instruction and each content count as
// one text, and the answer echoes the last user content.
func geminiPrompt(req *geminiRequest) (prompt, error) {
	join := func(parts []geminiPart) string {
		texts := make([]string, 0, len(parts))
		for _, p := range parts {
			if p.Text != "" {
				texts = append(texts, p.Text)
			}
		}
		return strings.Join(texts, "\n")
	}
	var p prompt
	if req.SystemInstruction != nil {
		if s := join(req.SystemInstruction.Parts); s != "" {
			p.texts = append(p.texts, s)
		}
	}
	if len(req.Contents) == 0 {
		return prompt{}, errors.New("contents: must not be empty")
	}
	lastUser := -1
	for i, c := range req.Contents {
		if c.Role != "user" && c.Role != "model" {
			return prompt{}, fmt.Errorf("contents[%d].role: want user or model", i)
		}
		p.texts = append(p.texts, join(c.Parts))
		if c.Role == "user" {
			lastUser = len(p.texts) - 1
		}
	}
	p.last = p.texts[len(p.texts)-1]
	if lastUser >= 0 {
		p.last = p.texts[lastUser]
	}
	return p, nil
}

// geminiReply is the answer: one JSON body, or one stream event per piece.
func geminiReply(id int64, model string, stream bool, p prompt, c content) reply {
	finish := "STOP"
	if c.cut {
		finish = "MAX_TOKENS"
	}
	pt := p.tokens()
	base := geminiAnswer{ModelVersion: model, ResponseID: "fake-gemini-" + strconv.FormatInt(id, 10),
		UsageMetadata: geminiUsage{PromptTokenCount: pt, CandidatesTokenCount: c.tokens, TotalTokenCount: pt + c.tokens}}
	answer := func(text, finish string) geminiAnswer {
		v := base
		cand := geminiCandidate{FinishReason: finish}
		cand.Content.Role = "model"
		cand.Content.Parts = []geminiPart{{Text: text}}
		v.Candidates = []geminiCandidate{cand}
		return v
	}
	var r reply
	if !stream {
		r = jsonReply(answer(c.value(), finish), c)
	} else {
		k := c.n()
		r = streamReply(k, func(i int) []byte {
			if i == k-1 {
				return data(answer(c.piece(i), finish))
			}
			v := answer(c.piece(i), "")
			v.UsageMetadata = geminiUsage{PromptTokenCount: pt, TotalTokenCount: pt}
			return data(v)
		})
	}
	r.promptTokens, r.completionTokens = pt, c.tokens
	return r
}

// geminiError is a Gemini error body; a positive retry adds a RetryInfo detail.
func geminiError(code int, msg string, retry time.Duration) any {
	status := map[int]string{400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED",
		404: "NOT_FOUND", 405: "INVALID_ARGUMENT", 429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 502: "UNKNOWN",
		503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED"}[code]
	e := map[string]any{"code": code, "message": msg, "status": status}
	if retry > 0 {
		e["details"] = []any{map[string]any{"@type": "type.googleapis.com/google.rpc.RetryInfo",
			"retryDelay": strconv.FormatFloat(retry.Seconds(), 'f', -1, 64) + "s"}}
	}
	return map[string]any{"error": e}
}
