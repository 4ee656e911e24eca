package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	"github.com/sluicehq/sluice/pkg/providers/providertest"
)

// The upstream wire shapes and routes that have no other end-to-end test: an Azure OpenAI
// deployment, Google Gemini, and the OpenAI /v1/completions and /v1/embeddings routes. Each
// runs through the real stack (ingress, worker, NATS, Postgres) against a fake upstream that
// speaks that provider's wire format and checks how it is called; each checks the answer
// the client gets and the usage the ledger recorded.

// wireCheck wraps an upstream handler: a request that fails check gets a 400 naming the
// problem (so the test fails on it), and every checked request is counted.
type wireCheck struct {
	mu       sync.Mutex
	problems []string
	served   int
}

func (c *wireCheck) handler(next http.Handler, check func(r *http.Request) string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p := check(r)
		c.mu.Lock()
		if p != "" {
			c.problems = append(c.problems, p)
		}
		c.served++
		c.mu.Unlock()
		if p != "" {
			http.Error(w, `{"error":{"message":"wire check: `+p+`"}}`, http.StatusBadRequest)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// verify fails t if any request broke the wire contract or fewer than n were served.
func (c *wireCheck) verify(t *testing.T, n int) {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, p := range c.problems {
		t.Errorf("upstream called wrongly: %s", p)
	}
	if c.served < n {
		t.Errorf("upstream served %d requests, want at least %d", c.served, n)
	}
}

// ledgerRow is what Postgres recorded for one job.
type ledgerRow struct {
	status           string
	prompt, complete int64
	jobCost, cost    float64
}

func (s *stack) ledger(jobID string) ledgerRow {
	s.t.Helper()
	s.settled()
	var r ledgerRow
	if err := s.db.Pool.QueryRow(context.Background(), `SELECT j.status, j.cost_usd::float8, l.cost_usd::float8,
		l.prompt_tokens, l.completion_tokens FROM jobs j JOIN usage_ledger l ON l.job_id = j.id WHERE j.id = $1`,
		jobID).Scan(&r.status, &r.jobCost, &r.cost, &r.prompt, &r.complete); err != nil {
		s.t.Fatalf("read job %s and its ledger row: %v", jobID, err)
	}
	return r
}

// checkLedger fails unless job succeeded and was recorded with usage pt/ct, charged at the
// given per-million prices.
func (s *stack) checkLedger(jobID string, pt, ct int64, in, out float64) {
	s.t.Helper()
	r := s.ledger(jobID)
	want := (float64(pt)*in + float64(ct)*out) / 1e6
	if r.status != "succeeded" || r.prompt != pt || r.complete != ct || !near(r.cost, want) || !near(r.jobCost, want) {
		s.t.Errorf("job %s: %s, ledger %d/%d tokens, cost ledger %v job %v; want succeeded, %d/%d, %v",
			jobID, r.status, r.prompt, r.complete, r.cost, r.jobCost, pt, ct, want)
	}
}

// sseChat reads a streamed chat completion: its content and the usage of its last chunk.
func sseChat(t *testing.T, b []byte) (content string, pt, ct int64, done bool) {
	t.Helper()
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		data, ok := strings.CutPrefix(sc.Text(), "data: ")
		if !ok {
			continue
		}
		if data == "[DONE]" {
			done = true
			continue
		}
		var c struct {
			Object  string `json:"object"`
			Choices []struct {
				Delta struct {
					Content string `json:"content"`
				} `json:"delta"`
			} `json:"choices"`
			Usage *struct {
				PromptTokens     int64 `json:"prompt_tokens"`
				CompletionTokens int64 `json:"completion_tokens"`
			} `json:"usage"`
		}
		if err := json.Unmarshal([]byte(data), &c); err != nil || c.Object != "chat.completion.chunk" {
			t.Fatalf("stream event %q is not a chat.completion.chunk (%v)", data, err)
		}
		for _, ch := range c.Choices {
			content += ch.Delta.Content
		}
		if c.Usage != nil {
			pt, ct = c.Usage.PromptTokens, c.Usage.CompletionTokens
		}
	}
	return content, pt, ct, done
}

// chatBothWays sends one chat completion whole (through the OpenAI SDK) and one streamed
// (raw SSE, asking for usage) for model, and checks answers and ledger against the fake's.
func (s *stack) chatBothWays(key, model string, in, out float64) {
	s.t.Helper()
	t := s.t
	prompt := "the sluice gate opens at dawn"
	want, pt, ct := fakeAnswer(prompt)

	var raw *http.Response
	client := openai.NewClient(option.WithBaseURL(s.base+"/v1"), option.WithAPIKey(key), option.WithMaxRetries(0))
	comp, err := client.Chat.Completions.New(context.Background(), openai.ChatCompletionNewParams{Model: model,
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage(prompt)}}, option.WithResponseInto(&raw))
	if err != nil {
		t.Fatalf("%s: SDK chat completion: %v", model, err)
	}
	if comp.Object != "chat.completion" || len(comp.Choices) != 1 || comp.Choices[0].Message.Content != want ||
		comp.Choices[0].FinishReason != "stop" || comp.Usage.PromptTokens != pt || comp.Usage.CompletionTokens != ct {
		t.Errorf("%s: answer %s, want %q with usage %d/%d", model, comp.RawJSON(), want, pt, ct)
	}
	s.checkLedger(raw.Header.Get("Sluice-Job-Id"), pt, ct, in, out)

	body := chatBody(model, prompt)
	body["stream"], body["stream_options"] = true, map[string]any{"include_usage": true}
	resp, b := s.do(http.MethodPost, "/v1/chat/completions", key, body)
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("%s: stream = %d %q %s", model, resp.StatusCode, resp.Header.Get("Content-Type"), b)
	}
	content, spt, sct, done := sseChat(t, b)
	if content != want || spt != pt || sct != ct || !done {
		t.Errorf("%s: streamed %q usage %d/%d done=%v, want %q %d/%d and [DONE]", model, content, spt, sct, done, want, pt, ct)
	}
	s.checkLedger(resp.Header.Get("Sluice-Job-Id"), pt, ct, in, out)
}

func TestAzureEndToEnd_Issue9_18(t *testing.T) {
	t.Parallel()
	s := newStack(t, stackOpts{})
	up, err := providertest.New(providertest.Config{})
	if err != nil {
		t.Fatal(err)
	}
	const azureKey, query, deployment = "azure-key-0123456789abcdef", "api-version=2024-10-21", "/openai/deployments/gpt4o-prod"
	var wc wireCheck
	srv := httptest.NewServer(wc.handler(http.StripPrefix(deployment, up), func(r *http.Request) string {
		switch {
		case r.Header.Get("Api-Key") != azureKey:
			return "no api-key header with the channel's key"
		case r.Header.Get("Authorization") != "":
			return "an Authorization header (Azure takes api-key)"
		case r.URL.RawQuery != query:
			return "query " + r.URL.RawQuery + ", want " + query
		case r.URL.Path != deployment+"/chat/completions" && r.URL.Path != deployment+"/embeddings":
			return "path " + r.URL.Path + ", want under the deployment"
		}
		return ""
	}))
	t.Cleanup(func() { up.Close(); srv.Close() })
	s.channel(map[string]any{"name": "azure", "provider": "azure", "base_url": srv.URL + deployment + "?" + query,
		"api_key": azureKey, "models": []string{"gpt-4o"}})
	s.price("gpt-4o", 2.5, 10)
	k := s.newKey(nil)

	s.chatBothWays(k.Key, "gpt-4o", 2.5, 10)

	// Embeddings go through the deployment too.
	resp, b := s.do(http.MethodPost, "/v1/embeddings", k.Key, map[string]any{"model": "gpt-4o", "input": "one two"})
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("azure embeddings = %d %s", resp.StatusCode, b)
	}
	s.checkLedger(resp.Header.Get("Sluice-Job-Id"), 2+3, 0, 2.5, 10)
	wc.verify(t, 3)
}

func TestGeminiEndToEnd_Issue9_18(t *testing.T) {
	t.Parallel()
	s := newStack(t, stackOpts{})
	up, err := providertest.New(providertest.Config{})
	if err != nil {
		t.Fatal(err)
	}
	const geminiKey = "AIza-gemini-key-0123456789"
	var wc wireCheck
	srv := httptest.NewServer(wc.handler(http.HandlerFunc(up.ServeGemini), func(r *http.Request) string {
		switch {
		case r.Header.Get("X-Goog-Api-Key") != geminiKey:
			return "no x-goog-api-key header with the channel's key"
		case r.URL.Query().Has("key"):
			return "the key in the query string"
		case r.URL.Path == "/v1beta/models/gemini-2.0-flash:generateContent":
		case r.URL.Path == "/v1beta/models/gemini-2.0-flash:streamGenerateContent" && r.URL.Query().Get("alt") == "sse":
		default:
			return "path " + r.URL.String() + ", want Gemini's generateContent or streamGenerateContent?alt=sse"
		}
		return ""
	}))
	t.Cleanup(func() { up.Close(); srv.Close() })
	// The alias clients use maps to Gemini's model name.
	s.channel(map[string]any{"name": "gemini", "provider": "gemini", "base_url": srv.URL + "/v1beta", "api_key": geminiKey,
		"models": []string{"flash"}, "model_map": map[string]string{"flash": "gemini-2.0-flash"}})
	s.price("flash", 0.1, 0.4)
	k := s.newKey(nil)

	s.chatBothWays(k.Key, "flash", 0.1, 0.4)
	wc.verify(t, 2)
}

func TestCompletionsEndToEnd_Issue9_18(t *testing.T) {
	t.Parallel()
	s := newStack(t, stackOpts{})
	up, srv := providertest.Start(t, providertest.Config{})
	s.channel(map[string]any{"provider": "openai", "base_url": srv.URL + "/v1", "models": []string{"gpt-3.5-turbo-instruct"}})
	s.price("gpt-3.5-turbo-instruct", 1.5, 2)
	k := s.newKey(nil)
	prompt := "say something about sluices"
	want, pt, ct := fakeAnswer(prompt)

	var raw *http.Response
	client := openai.NewClient(option.WithBaseURL(s.base+"/v1"), option.WithAPIKey(k.Key), option.WithMaxRetries(0))
	comp, err := client.Completions.New(context.Background(), openai.CompletionNewParams{
		Model:  "gpt-3.5-turbo-instruct",
		Prompt: openai.CompletionNewParamsPromptUnion{OfString: openai.String(prompt)},
	}, option.WithResponseInto(&raw))
	if err != nil {
		t.Fatalf("SDK completion: %v", err)
	}
	if comp.Object != "text_completion" || len(comp.Choices) != 1 || comp.Choices[0].Text != want ||
		comp.Usage.PromptTokens != pt || comp.Usage.CompletionTokens != ct {
		t.Errorf("completion %s, want text %q with usage %d/%d", comp.RawJSON(), want, pt, ct)
	}
	s.checkLedger(raw.Header.Get("Sluice-Job-Id"), pt, ct, 1.5, 2)

	// Streamed, through the SDK: text_completion chunks whose text adds up to the answer.
	stream := client.Completions.NewStreaming(context.Background(), openai.CompletionNewParams{
		Model:         "gpt-3.5-turbo-instruct",
		Prompt:        openai.CompletionNewParamsPromptUnion{OfString: openai.String(prompt)},
		StreamOptions: openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)},
	}, option.WithResponseInto(&raw))
	var text string
	var usage openai.CompletionUsage
	for stream.Next() {
		c := stream.Current()
		if c.Object != "text_completion" {
			t.Errorf("stream chunk object %q, want text_completion", c.Object)
		}
		for _, ch := range c.Choices {
			text += ch.Text
		}
		if c.Usage.TotalTokens > 0 {
			usage = c.Usage
		}
	}
	if err := stream.Err(); err != nil {
		t.Fatalf("SDK completion stream: %v", err)
	}
	if text != want || usage.PromptTokens != pt || usage.CompletionTokens != ct {
		t.Errorf("streamed completion %q usage %d/%d, want %q %d/%d", text, usage.PromptTokens, usage.CompletionTokens, want, pt, ct)
	}
	s.checkLedger(raw.Header.Get("Sluice-Job-Id"), pt, ct, 1.5, 2)
	if st := up.Stats(); st.Succeeded != 2 {
		t.Errorf("upstream answered %d completions in full, want 2", st.Succeeded)
	}
}

func TestEmbeddingsEndToEnd_Issue9_18(t *testing.T) {
	t.Parallel()
	s := newStack(t, stackOpts{})
	_, srv := providertest.Start(t, providertest.Config{})
	s.channel(map[string]any{"provider": "openai", "base_url": srv.URL + "/v1", "models": []string{"text-embedding-3-small"}})
	s.price("text-embedding-3-small", 0.02, 0)
	k := s.newKey(nil)
	inputs := []string{"first input here", "second"}
	pt := int64(3+3) + int64(1+3) // words + 3 per input

	var raw *http.Response
	client := openai.NewClient(option.WithBaseURL(s.base+"/v1"), option.WithAPIKey(k.Key), option.WithMaxRetries(0))
	emb, err := client.Embeddings.New(context.Background(), openai.EmbeddingNewParams{
		Model:          "text-embedding-3-small",
		Input:          openai.EmbeddingNewParamsInputUnion{OfArrayOfStrings: inputs},
		EncodingFormat: openai.EmbeddingNewParamsEncodingFormatFloat,
	}, option.WithResponseInto(&raw))
	if err != nil {
		t.Fatalf("SDK embeddings: %v", err)
	}
	if emb.Object != "list" || len(emb.Data) != len(inputs) || emb.Usage.PromptTokens != pt || emb.Usage.TotalTokens != pt {
		t.Fatalf("embeddings %s, want a list of %d with %d prompt tokens", emb.RawJSON(), len(inputs), pt)
	}
	for i, d := range emb.Data {
		want := providertest.Embed(inputs[i])
		if d.Object != "embedding" || d.Index != int64(i) || len(d.Embedding) != len(want) {
			t.Fatalf("embedding %d = %s, want %d dimensions", i, d.RawJSON(), len(want))
		}
		for j := range want {
			if float32(d.Embedding[j]) != want[j] {
				t.Errorf("embedding %d[%d] = %v, want %v (the vector for %q)", i, j, d.Embedding[j], want[j], inputs[i])
				break
			}
		}
	}
	s.checkLedger(raw.Header.Get("Sluice-Job-Id"), pt, 0, 0.02, 0)

	// base64 vectors pass through as the upstream sent them.
	resp, b := s.do(http.MethodPost, "/v1/embeddings", k.Key, map[string]any{"model": "text-embedding-3-small",
		"input": "x", "encoding_format": "base64"})
	var list struct {
		Data []struct {
			Embedding string `json:"embedding"`
		} `json:"data"`
	}
	if err := json.Unmarshal(b, &list); resp.StatusCode != http.StatusOK || err != nil || len(list.Data) != 1 ||
		len(list.Data[0].Embedding) != 44 { // 8 float32s, base64
		t.Errorf("base64 embeddings = %d %s, want one base64 vector of 8 floats", resp.StatusCode, b)
	}
	s.checkLedger(resp.Header.Get("Sluice-Job-Id"), 1+3, 0, 0.02, 0)
}
