package e2e

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	"github.com/sluicehq/sluice/pkg/providers/providertest"
)

// fakeAnswer is what providertest answers to a single user message: "Echo: <text>", with
// prompt_tokens = words + 3 and completion_tokens = words of the answer.
func fakeAnswer(text string) (content string, prompt, completion int64) {
	words := strings.Fields(text)
	content = strings.Join(append([]string{"Echo:"}, words...), " ")
	return content, int64(len(words) + 3), int64(len(words) + 1)
}

type chatResponse struct {
	ID      string `json:"id"`
	Choices []struct {
		Message struct {
			Content string `json:"content"`
		} `json:"message"`
	} `json:"choices"`
	Usage struct {
		PromptTokens     int64 `json:"prompt_tokens"`
		CompletionTokens int64 `json:"completion_tokens"`
	} `json:"usage"`
}

func TestChatCompletionEndToEnd(t *testing.T) {
	t.Parallel()
	s := newStack(t, stackOpts{})
	up, srv := providertest.Start(t, providertest.Config{})
	s.channel(map[string]any{"provider": "openai", "base_url": srv.URL + "/v1", "api_key": "sk-upstream-secret-1",
		"models": []string{"gpt-4o-mini"}})
	s.price("gpt-4o-mini", 0.15, 0.60)
	k := s.newKey(nil)

	resp, b := s.do(http.MethodPost, "/v1/chat/completions", k.Key, chatBody("gpt-4o-mini", "the quick brown fox"))
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status = %d, body %s", resp.StatusCode, b)
	}
	jobID := resp.Header.Get("Sluice-Job-Id")
	if !strings.HasPrefix(jobID, "job_") || resp.Header.Get("X-Request-Id") == "" {
		t.Errorf("headers Sluice-Job-Id=%q X-Request-Id=%q, want both set", jobID, resp.Header.Get("X-Request-Id"))
	}
	var got chatResponse
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	want, pt, ct := fakeAnswer("the quick brown fox")
	if len(got.Choices) != 1 || got.Choices[0].Message.Content != want {
		t.Fatalf("answer = %s, want content %q", b, want)
	}
	if got.Usage.PromptTokens != pt || got.Usage.CompletionTokens != ct {
		t.Errorf("usage = %+v, want %d/%d", got.Usage, pt, ct)
	}
	if st := up.Stats(); st.PromptTokens != pt || st.CompletionTokens != ct {
		t.Errorf("upstream reports usage %d/%d, want %d/%d", st.PromptTokens, st.CompletionTokens, pt, ct)
	}

	// The job row, the ledger row and the key's spend, straight from Postgres.
	ctx := context.Background()
	wantCost := (float64(pt)*0.15 + float64(ct)*0.60) / 1e6
	var status string
	var cost, ledgerCost, spent float64
	var ledgerPT, ledgerCT int64
	s.settled()
	if err := s.db.Pool.QueryRow(ctx, `SELECT j.status, j.cost_usd::float8, l.cost_usd::float8, l.prompt_tokens,
		l.completion_tokens, key_spent(k.id)::float8 FROM jobs j JOIN usage_ledger l ON l.job_id = j.id
		JOIN api_keys k ON k.id = j.key_id WHERE j.id = $1`, jobID).Scan(&status, &cost, &ledgerCost, &ledgerPT, &ledgerCT, &spent); err != nil {
		t.Fatalf("read job, ledger and spend: %v", err)
	}
	if status != "succeeded" || ledgerPT != pt || ledgerCT != ct {
		t.Errorf("job %s, ledger %d/%d; want succeeded %d/%d", status, ledgerPT, ledgerCT, pt, ct)
	}
	if !near(cost, wantCost) || !near(ledgerCost, wantCost) || !near(spent, wantCost) {
		t.Errorf("cost job=%v ledger=%v spent=%v, want %v", cost, ledgerCost, spent, wantCost)
	}

	// The same call through the official OpenAI Go SDK.
	client := openai.NewClient(option.WithBaseURL(s.base+"/v1"), option.WithAPIKey(k.Key), option.WithMaxRetries(0))
	comp, err := client.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{
		Model:    "gpt-4o-mini",
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hello from the sdk")},
	})
	if err != nil {
		t.Fatalf("SDK chat completion: %v", err)
	}
	want, pt2, ct2 := fakeAnswer("hello from the sdk")
	if comp.Choices[0].Message.Content != want || comp.Usage.PromptTokens != pt2 || comp.Usage.CompletionTokens != ct2 {
		t.Errorf("SDK answer %q usage %d/%d, want %q %d/%d", comp.Choices[0].Message.Content,
			comp.Usage.PromptTokens, comp.Usage.CompletionTokens, want, pt2, ct2)
	}
	// The SDK's error type sees our API errors.
	bad := openai.NewClient(option.WithBaseURL(s.base+"/v1"), option.WithAPIKey("sk-sl-nope"), option.WithMaxRetries(0))
	_, err = bad.
		Chat.Completions.New(ctx, openai.ChatCompletionNewParams{Model: "gpt-4o-mini",
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("x")}})
	var apiErr *openai.Error
	if !asError(err, &apiErr) || apiErr.StatusCode != 401 || apiErr.Code != "invalid_api_key" {
		t.Errorf("SDK with a bad key: err = %v, want a 401 invalid_api_key *openai.Error", err)
	}
	s.settled()
	var spent2 float64
	if err := s.db.Pool.QueryRow(ctx, `SELECT key_spent($1)::float8`, k.ID).Scan(&spent2); err != nil {
		t.Fatal(err)
	}
	if want := wantCost + (float64(pt2)*0.15+float64(ct2)*0.60)/1e6; !near(spent2, want) {
		t.Errorf("spent after two calls = %v, want %v", spent2, want)
	}
}

func near(a, b float64) bool { d := a - b; return d < 1e-9 && d > -1e-9 }

// sequence answers the i-th request with steps[i] (the last step repeats).
type sequence struct {
	n     atomic.Int64
	steps []http.HandlerFunc
}

func (q *sequence) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	i := int(q.n.Add(1) - 1)
	q.steps[min(i, len(q.steps)-1)](w, r)
}

func TestRetryAfter429ThenSuccess(t *testing.T) {
	t.Parallel()
	s := newStack(t, stackOpts{})
	up, _ := providertest.Start(t, providertest.Config{})
	q := &sequence{steps: []http.HandlerFunc{
		func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Retry-After", "1")
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusTooManyRequests)
			_, _ = w.Write([]byte(`{"error":{"message":"slow down","type":"rate_limit_error"}}`))
		},
		up.ServeHTTP,
	}}
	srv := httptest.NewServer(q)
	t.Cleanup(srv.Close)
	s.channel(map[string]any{"provider": "openai", "base_url": srv.URL + "/v1", "models": []string{"m"}})
	s.price("m", 1, 2)
	k := s.newKey(nil)

	began := time.Now()
	resp, b := s.do(http.MethodPost, "/v1/chat/completions", k.Key, chatBody("m", "retry me"))
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status = %d %s, want 200 after the retry", resp.StatusCode, b)
	}
	if el := time.Since(began); el < time.Second {
		t.Errorf("answered after %s, want ≥ 1s: Retry-After was not honoured", el)
	}
	if n := q.n.Load(); n != 2 {
		t.Errorf("upstream calls = %d, want 2", n)
	}
	_, pt, ct := fakeAnswer("retry me")
	var rows int
	var spent float64
	var attempts int
	s.settled()
	if err := s.db.Pool.QueryRow(context.Background(), `SELECT (SELECT count(*) FROM usage_ledger),
		key_spent($1)::float8, (SELECT attempts FROM jobs)`, k.ID).Scan(&rows, &spent, &attempts); err != nil {
		t.Fatal(err)
	}
	if rows != 1 || !near(spent, (float64(pt)*1+float64(ct)*2)/1e6) {
		t.Errorf("ledger rows %d, spent %v; want 1 row and one charge", rows, spent)
	}
}

func TestUpstream400PassedThroughNotRetriedNotCharged(t *testing.T) {
	t.Parallel()
	s := newStack(t, stackOpts{})
	var calls atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		calls.Add(1)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		_, _ = w.Write([]byte(`{"error":{"message":"max_tokens is too large: 99999999","type":"invalid_request_error","param":"max_tokens","code":"bad_max_tokens"}}`))
	}))
	t.Cleanup(srv.Close)
	s.channel(map[string]any{"provider": "openai", "base_url": srv.URL, "models": []string{"m"}})
	s.price("m", 1, 2)
	k := s.newKey(nil)
	resp, b := s.do(http.MethodPost, "/v1/chat/completions", k.Key, chatBody("m", "hi"))
	if resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("status = %d %s, want 400", resp.StatusCode, b)
	}
	typ, code, msg := apiErr(t, b)
	if typ != "invalid_request_error" || code != "bad_max_tokens" || msg != "max_tokens is too large: 99999999" {
		t.Errorf("error = %s/%s/%q, want the upstream's", typ, code, msg)
	}
	if n := calls.Load(); n != 1 {
		t.Errorf("upstream calls = %d, want 1 (no retry)", n)
	}
	var rows int
	var spent float64
	if err := s.db.Pool.QueryRow(context.Background(), `SELECT (SELECT count(*) FROM usage_ledger),
		key_spent($1)::float8`, k.ID).Scan(&rows, &spent); err != nil {
		t.Fatal(err)
	}
	if rows != 0 || spent != 0 {
		t.Errorf("ledger rows %d, spent %v; want nothing charged", rows, spent)
	}
}

func TestUpstreamHangTimesOut(t *testing.T) {
	t.Parallel()
	s := newStack(t, stackOpts{jobTimeout: 2 * time.Second, concurrency: 2})
	up, srv := providertest.Start(t, providertest.Config{})
	s.channel(map[string]any{"provider": "openai", "base_url": srv.URL + "/v1", "models": []string{"slow"},
		"model_map": map[string]string{"slow": "gpt:hang"}})
	k := s.newKey(nil)
	began := time.Now()
	resp, b := s.do(http.MethodPost, "/v1/chat/completions", k.Key, chatBody("slow", "anyone there?"))
	el := time.Since(began)
	if resp.StatusCode != http.StatusGatewayTimeout {
		t.Fatalf("status = %d %s, want 504", resp.StatusCode, b)
	}
	if typ, _, _ := apiErr(t, b); typ != "timeout_error" {
		t.Errorf("error type = %s, want timeout_error", typ)
	}
	if el < 2*time.Second || el > 10*time.Second {
		t.Errorf("504 after %s, want at the 2s deadline", el)
	}
	// The upstream connection is closed and the slot is free again.
	eventually(t, 5*time.Second, "upstream connection closed", func() bool { return up.Stats().OpenConns == 0 })
	eventually(t, 5*time.Second, "worker slot freed", func() bool { return metric(t, s.ops, "sluice_worker_busy_slots") == 0 })
	if n := up.Stats().Requests[providertest.ModeHang]; n != 1 {
		t.Errorf("hang requests = %d, want 1 (a timeout is not retried past the deadline)", n)
	}
}
