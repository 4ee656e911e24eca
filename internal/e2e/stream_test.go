package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	"github.com/sluicehq/sluice/pkg/providers/providertest"
)

func TestStreamingThroughSDK(t *testing.T) {
	t.Parallel()
	s := newStack(t, stackOpts{})
	up, srv := providertest.Start(t, providertest.Config{})
	s.channel(map[string]any{"provider": "openai", "base_url": srv.URL + "/v1", "models": []string{"m", "m-cut"},
		"model_map": map[string]string{"m-cut": "m:midstream"}})
	s.price("m", 1, 2)
	s.price("m-cut", 1, 2)
	k := s.newKey(nil)
	client := openai.NewClient(option.WithBaseURL(s.base+"/v1"), option.WithAPIKey(k.Key), option.WithMaxRetries(0))
	ctx := context.Background()
	prompt := "stream these words back to me one by one please"
	params := openai.ChatCompletionNewParams{Model: "m",
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage(prompt)}}

	whole, err := client.Chat.Completions.New(ctx, params)
	if err != nil {
		t.Fatal(err)
	}
	stream := client.Chat.Completions.NewStreaming(ctx, params)
	var got strings.Builder
	chunks := 0
	sawUsage := false
	for stream.Next() {
		c := stream.Current()
		chunks++
		if len(c.Choices) > 0 {
			got.WriteString(c.Choices[0].Delta.Content)
		}
		if c.Usage.TotalTokens > 0 {
			sawUsage = true
		}
	}
	if err := stream.Err(); err != nil {
		t.Fatalf("stream: %v", err)
	}
	if got.String() != whole.Choices[0].Message.Content || chunks < 5 {
		t.Errorf("stream gave %q in %d chunks, want %q", got.String(), chunks, whole.Choices[0].Message.Content)
	}
	if sawUsage {
		t.Errorf("client did not ask for include_usage but got a usage chunk")
	}
	// Usage is recorded for the stream even though the client did not ask for it.
	_, pt, ct := fakeAnswer(prompt)
	s.settled()
	var n int
	if err := s.db.Pool.QueryRow(ctx, `SELECT count(*) FROM usage_ledger WHERE prompt_tokens = $1 AND completion_tokens = $2
		AND NOT estimated`, pt, ct).Scan(&n); err != nil || n != 2 {
		t.Errorf("ledger rows with usage %d/%d = %d (err %v), want 2 (whole + stream)", pt, ct, n, err)
	}

	// With include_usage the final usage chunk is forwarded.
	params.StreamOptions = openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)}
	stream = client.Chat.Completions.NewStreaming(ctx, params)
	var usage int64
	for stream.Next() {
		usage = max(usage, stream.Current().Usage.TotalTokens)
	}
	if err := stream.Err(); err != nil || usage != pt+ct {
		t.Errorf("include_usage stream: usage %d err %v, want %d", usage, err, pt+ct)
	}

	// A stream cut by the upstream ends in an error, never in [DONE].
	before := up.Stats().Requests[providertest.ModeMidstream]
	cut := client.Chat.Completions.NewStreaming(ctx, openai.ChatCompletionNewParams{Model: "m-cut",
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage(prompt)}})
	for cut.Next() {
	}
	if cut.Err() == nil {
		t.Errorf("a stream cut midway ended without an error")
	}
	if n := up.Stats().Requests[providertest.ModeMidstream] - before; n != 1 {
		t.Errorf("midstream upstream calls = %d, want 1 (a started stream is not retried)", n)
	}
	s.settled()
	var status string
	var charged int
	if err := s.db.Pool.QueryRow(ctx, `SELECT status, (SELECT count(*) FROM usage_ledger l WHERE l.job_id = j.id)
		FROM jobs j WHERE model = 'm-cut'`).Scan(&status, &charged); err != nil || status != "failed" || charged != 0 {
		t.Errorf("cut stream job: status %q ledger rows %d err %v; want failed, and not charged: the upstream reported no usage", status, charged, err)
	}
}

func TestStreamCutRawSSE(t *testing.T) {
	t.Parallel()
	s := newStack(t, stackOpts{})
	_, srv := providertest.Start(t, providertest.Config{})
	s.channel(map[string]any{"provider": "openai", "base_url": srv.URL + "/v1", "models": []string{"cut"},
		"model_map": map[string]string{"cut": "m:midstream"}})
	k := s.newKey(nil)
	body := chatBody("cut", "one two three four five six")
	body["stream"] = true
	resp, b := s.do(http.MethodPost, "/v1/chat/completions", k.Key, body)
	text := string(b)
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("status %d content type %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	if strings.Contains(text, "[DONE]") || !strings.Contains(text, `"error"`) {
		t.Errorf("cut stream body = %q, want an error event and no [DONE]", text)
	}
}

func TestClientDisconnectAbortsUpstream(t *testing.T) {
	t.Parallel()
	s := newStack(t, stackOpts{concurrency: 2})
	up, srv := providertest.Start(t, providertest.Config{DripInterval: 2 * time.Millisecond})
	s.channel(map[string]any{"provider": "openai", "base_url": srv.URL + "/v1", "models": []string{"slow"},
		"model_map": map[string]string{"slow": "m:drip"}})
	k := s.newKey(nil)
	body, _ := json.Marshal(map[string]any{"model": "slow", "stream": true,
		"messages": []map[string]any{{"role": "user", "content": strings.Repeat("word ", 200)}}})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, s.base+"/v1/chat/completions", strings.NewReader(string(body)))
	req.Header.Set("Authorization", "Bearer "+k.Key)
	req.Header.Set("Content-Type", "application/json")
	resp, err := s.http.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	// Read the first event, so the upstream is certainly mid-answer, then go away.
	line, err := bufio.NewReader(resp.Body).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "data: ") {
		t.Fatalf("first line %q, err %v", line, err)
	}
	if up.Stats().OpenConns == 0 {
		t.Fatal("upstream has no open connection mid-stream")
	}
	cancel()
	began := time.Now()
	eventually(t, 5*time.Second, "upstream connection closed", func() bool { return up.Stats().OpenConns == 0 })
	if el := time.Since(began); el > time.Second {
		t.Errorf("upstream call aborted %s after the client left, want within 1s", el)
	}
	eventually(t, 5*time.Second, "worker slot freed", func() bool { return metric(t, s.ops, "sluice_worker_busy_slots") == 0 })
	var status string
	var estimated bool
	eventually(t, 5*time.Second, "job recorded", func() bool {
		return s.db.Pool.QueryRow(context.Background(), `SELECT j.status, l.estimated FROM jobs j
			JOIN usage_ledger l ON l.job_id = j.id`).Scan(&status, &estimated) == nil
	})
	if status != "canceled" || !estimated {
		t.Errorf("job %s, estimated %v; want canceled and charged an estimate (the upstream reported no usage)", status, estimated)
	}
}

func TestFiveMegabyteAnswer(t *testing.T) {
	t.Parallel()
	s := newStack(t, stackOpts{})
	up, srv := providertest.Start(t, providertest.Config{BigBytes: 5 << 20})
	s.channel(map[string]any{"provider": "openai", "base_url": srv.URL + "/v1", "models": []string{"big"},
		"model_map": map[string]string{"big": "m:big"}})
	k := s.newKey(nil)
	resp, b := s.do(http.MethodPost, "/v1/chat/completions", k.Key, chatBody("big", "a lot please"))
	if resp.StatusCode != 200 {
		t.Fatalf("status %d %.200s", resp.StatusCode, b)
	}
	var got chatResponse
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatalf("answer of %d bytes is not whole JSON: %v", len(b), err)
	}
	if n := len(got.Choices[0].Message.Content); n != 5<<20 {
		t.Errorf("content is %d bytes, want %d", n, 5<<20)
	}
	if st := up.Stats(); st.Succeeded != 1 || got.Usage.CompletionTokens != st.CompletionTokens {
		t.Errorf("usage %d, upstream reports %d", got.Usage.CompletionTokens, st.CompletionTokens)
	}
}

// TestTenMegabyteSSEEvent: one upstream SSE line of 10 MB passes through whole (no 64 KB
// scanner limit; split across NATS messages and joined again).
func TestTenMegabyteSSEEvent(t *testing.T) {
	t.Parallel()
	s := newStack(t, stackOpts{})
	content := strings.Repeat("x", 10<<20)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "text/event-stream")
		chunk := func(v any) {
			b, _ := json.Marshal(v)
			_, _ = fmt.Fprintf(w, "data: %s\n\n", b)
		}
		chunk(map[string]any{"object": "chat.completion.chunk", "choices": []any{map[string]any{"index": 0, "delta": map[string]any{"role": "assistant", "content": ""}}}})
		chunk(map[string]any{"object": "chat.completion.chunk", "choices": []any{map[string]any{"index": 0, "delta": map[string]any{"content": content}}}})
		chunk(map[string]any{"object": "chat.completion.chunk", "choices": []any{map[string]any{"index": 0, "delta": map[string]any{}, "finish_reason": "stop"}}})
		chunk(map[string]any{"object": "chat.completion.chunk", "choices": []any{}, "usage": map[string]any{"prompt_tokens": 3, "completion_tokens": 2_621_440}})
		_, _ = io.WriteString(w, "data: [DONE]\n\n")
	}))
	t.Cleanup(srv.Close)
	s.channel(map[string]any{"provider": "openai", "base_url": srv.URL, "models": []string{"huge"}})
	k := s.newKey(nil)
	body := chatBody("huge", "go big")
	body["stream"] = true
	resp, b := s.do(http.MethodPost, "/v1/chat/completions", k.Key, body)
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	var got strings.Builder
	done := false
	rd := bufio.NewReaderSize(strings.NewReader(string(b)), 64<<10)
	for {
		line, err := rd.ReadString('\n')
		if err != nil {
			break
		}
		data, ok := strings.CutPrefix(strings.TrimRight(line, "\n"), "data: ")
		if !ok {
			continue
		}
		if data == "[DONE]" {
			done = true
			continue
		}
		var c struct {
			Choices []struct {
				Delta struct {
					Content string `json:"content"`
				} `json:"delta"`
			} `json:"choices"`
		}
		if err := json.Unmarshal([]byte(data), &c); err != nil {
			t.Fatalf("event of %d bytes is not whole JSON: %v", len(data), err)
		}
		for _, ch := range c.Choices {
			got.WriteString(ch.Delta.Content)
		}
	}
	if !done || got.Len() != len(content) {
		t.Errorf("stream: done=%v, content %d bytes; want [DONE] and %d bytes", done, got.Len(), len(content))
	}
}
