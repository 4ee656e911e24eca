package e2e

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluicehq/sluice/pkg/providers/providertest"
)

// hookCall is one request a webhook receiver got.
type hookCall struct {
	header http.Header
	body   []byte
}

// hookReceiver answers the n-th webhook request (from 1) with status(n) and records it.
func hookReceiver(t *testing.T, status func(n int) int) (*httptest.Server, func() []hookCall) {
	t.Helper()
	var mu sync.Mutex
	var calls []hookCall
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		if err != nil {
			t.Errorf("webhook receiver: read body: %v", err)
		}
		mu.Lock()
		calls = append(calls, hookCall{r.Header.Clone(), b})
		n := len(calls)
		mu.Unlock()
		w.WriteHeader(status(n))
	}))
	t.Cleanup(srv.Close)
	return srv, func() []hookCall {
		mu.Lock()
		defer mu.Unlock()
		return append([]hookCall(nil), calls...)
	}
}

// checkSignature verifies Sluice-Signature as a receiver would: t=<unix>,v1=<hex HMAC-SHA256
// of "<t>.<body>"> keyed by the key's webhook secret.
func checkSignature(t *testing.T, header string, body []byte, webhookSecret string) {
	t.Helper()
	tPart, vPart, _ := strings.Cut(header, ",")
	ts, ok1 := strings.CutPrefix(tPart, "t=")
	sig, ok2 := strings.CutPrefix(vPart, "v1=")
	unix, err := strconv.ParseInt(ts, 10, 64)
	if !ok1 || !ok2 || err != nil {
		t.Fatalf("Sluice-Signature = %q, want t=<unix>,v1=<hex>", header)
	}
	if d := time.Since(time.Unix(unix, 0)); d < -time.Minute || d > time.Minute {
		t.Errorf("signature timestamp %d is %s from now", unix, d)
	}
	mac := hmac.New(sha256.New, []byte(webhookSecret))
	mac.Write([]byte(ts + "."))
	mac.Write(body)
	if want := hex.EncodeToString(mac.Sum(nil)); !hmac.Equal([]byte(sig), []byte(want)) {
		t.Errorf("Sluice-Signature v1 = %s, want %s", sig, want)
	}
}

func TestWebhookRetriedUntilAcceptedSignedJobObject(t *testing.T) {
	t.Parallel()
	s := newStack(t, stackOpts{hookRetry: 20 * time.Millisecond})
	_, up := providertest.Start(t, providertest.Config{})
	s.channel(map[string]any{"provider": "openai", "base_url": up.URL + "/v1", "models": []string{"gpt-4o-mini"}})
	s.price("gpt-4o-mini", 0.15, 0.60)
	k := s.newKey(nil)
	hook, calls := hookReceiver(t, func(n int) int {
		if n <= 2 {
			return http.StatusInternalServerError
		}
		return http.StatusOK
	})

	resp, b := s.do(http.MethodPost, "/v1/jobs", k.Key, map[string]any{"endpoint": "/v1/chat/completions",
		"body": chatBody("gpt-4o-mini", "call me back"), "metadata": map[string]string{"order": "7"},
		"webhook": map[string]string{"url": hook.URL + "/hooks/sluice?source=e2e"}})
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("submit = %d %s, want 202", resp.StatusCode, b)
	}
	var submitted struct {
		ID string `json:"id"`
	}
	if err := json.Unmarshal(b, &submitted); err != nil || submitted.ID == "" {
		t.Fatalf("submit answer %s: %v", b, err)
	}
	id := submitted.ID

	ctx := context.Background()
	eventually(t, 30*time.Second, "the webhook recorded as delivered", func() bool {
		var delivered bool
		err := s.db.Pool.QueryRow(ctx, `SELECT delivered_at IS NOT NULL FROM webhook_deliveries WHERE job_id = $1`,
			id).Scan(&delivered)
		return err == nil && delivered
	})
	var attempts, lastStatus int
	var lastError *string
	var gaveUp bool
	if err := s.db.Pool.QueryRow(ctx, `SELECT attempts, last_status, last_error, gave_up_at IS NOT NULL
		FROM webhook_deliveries WHERE job_id = $1`, id).Scan(&attempts, &lastStatus, &lastError, &gaveUp); err != nil {
		t.Fatal(err)
	}
	if attempts != 3 || lastStatus != http.StatusOK || lastError != nil || gaveUp {
		t.Errorf("delivery row: attempts %d, last status %d, last error %v, gave up %v; want 3 attempts ending in 200",
			attempts, lastStatus, lastError, gaveUp)
	}

	// The receiver got the job object exactly as GET /v1/jobs/{id} renders it, signed, each time.
	resp, jobBody := s.do(http.MethodGet, "/v1/jobs/"+id, k.Key, nil)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET job = %d %s", resp.StatusCode, jobBody)
	}
	got := calls()
	if len(got) != 3 {
		t.Fatalf("receiver got %d requests, want 3", len(got))
	}
	for i, c := range got {
		for h, want := range map[string]string{"Content-Type": "application/json", "User-Agent": "Sluice-Webhook/1",
			"Sluice-Job-Id": id} {
			if v := c.header.Get(h); v != want {
				t.Errorf("attempt %d: header %s = %q, want %q", i+1, h, v, want)
			}
		}
		checkSignature(t, c.header.Get("Sluice-Signature"), c.body, k.WebhookSecret)
		if !bytes.Equal(c.body, jobBody) {
			t.Errorf("attempt %d: body\n%s\nwant the GET /v1/jobs/%s body\n%s", i+1, c.body, id, jobBody)
		}
	}
	var obj struct {
		ID       string            `json:"id"`
		Status   string            `json:"status"`
		Metadata map[string]string `json:"metadata"`
		Usage    *struct {
			PromptTokens     int64 `json:"prompt_tokens"`
			CompletionTokens int64 `json:"completion_tokens"`
			TotalTokens      int64 `json:"total_tokens"`
		} `json:"usage"`
		CostUSD  *float64 `json:"cost_usd"`
		Response *struct {
			StatusCode int `json:"status_code"`
		} `json:"response"`
	}
	if err := json.Unmarshal(got[2].body, &obj); err != nil {
		t.Fatalf("webhook body %s: %v", got[2].body, err)
	}
	_, pt, ct := fakeAnswer("call me back")
	if obj.ID != id || obj.Status != "succeeded" || obj.Metadata["order"] != "7" || obj.Response == nil ||
		obj.Response.StatusCode != 200 || obj.CostUSD == nil || *obj.CostUSD <= 0 {
		t.Errorf("webhook job object = %s, want the succeeded job with its metadata, response and cost", got[2].body)
	}
	if obj.Usage == nil || obj.Usage.PromptTokens != pt || obj.Usage.CompletionTokens != ct || obj.Usage.TotalTokens != pt+ct {
		t.Errorf("webhook usage = %+v, want %d/%d", obj.Usage, pt, ct)
	}
}

func TestWebhookPrivateTargetRefusedAtSubmit(t *testing.T) {
	t.Parallel()
	s := newStack(t, stackOpts{noPrivate: true})
	_, up := providertest.Start(t, providertest.Config{})
	s.channel(map[string]any{"provider": "openai", "base_url": up.URL + "/v1", "models": []string{"m"}})
	k := s.newKey(nil)
	hook, calls := hookReceiver(t, func(int) int { return http.StatusOK })

	for _, u := range []string{hook.URL + "/hook", "http://localhost/hook", "http://[::1]:8080/", "http://10.1.2.3/hook",
		"http://169.254.169.254/latest/meta-data"} {
		resp, b := s.do(http.MethodPost, "/v1/jobs", k.Key, map[string]any{"endpoint": "/v1/chat/completions",
			"body": chatBody("m", "hi"), "webhook": map[string]string{"url": u}})
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("webhook %s: submit = %d %s, want 400", u, resp.StatusCode, b)
			continue
		}
		var e struct {
			Error struct {
				Type  string `json:"type"`
				Param string `json:"param"`
			} `json:"error"`
		}
		if err := json.Unmarshal(b, &e); err != nil || e.Error.Type != "invalid_request_error" || e.Error.Param != "webhook.url" {
			t.Errorf("webhook %s: error %s, want invalid_request_error on webhook.url", u, b)
		}
	}
	var jobs int
	if err := s.db.Pool.QueryRow(context.Background(), `SELECT count(*) FROM jobs`).Scan(&jobs); err != nil || jobs != 0 {
		t.Errorf("jobs stored = %d (err %v), want none", jobs, err)
	}
	if n := len(calls()); n != 0 {
		t.Errorf("receiver got %d requests, want none", n)
	}
}
