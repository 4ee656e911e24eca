package e2e

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

// TestInvalidUTF8 : a body that is not UTF-8 is a 400 at once; an upstream answer that is not
// UTF-8 cannot be stored, and the caller gets a prompt 502 (not a wait for its deadline)
// while the job is still recorded, failed, and charged the usage the upstream reported.
func TestInvalidUTF8(t *testing.T) {
	t.Parallel()
	s := newStack(t, stackOpts{jobTimeout: 20 * time.Second})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte("{\"object\":\"chat.completion\",\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":\"bad \xff\xfe byte\"},\"finish_reason\":\"stop\"}],\"usage\":{\"prompt_tokens\":4,\"completion_tokens\":2}}"))
	}))
	t.Cleanup(srv.Close)
	s.channel(map[string]any{"provider": "openai", "base_url": srv.URL, "models": []string{"m"}})
	s.price("m", 1, 1)
	k := s.newKey(nil)

	resp, b := s.do(http.MethodPost, "/v1/chat/completions", k.Key, "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"\xff\"}]}")
	if resp.StatusCode != 400 {
		t.Errorf("invalid UTF-8 body: %d %s, want 400", resp.StatusCode, b)
	}

	began := time.Now()
	resp, b = s.do(http.MethodPost, "/v1/chat/completions", k.Key, chatBody("m", "hello"))
	if resp.StatusCode != http.StatusBadGateway {
		t.Fatalf("unstorable answer: %d %s, want 502", resp.StatusCode, b)
	}
	if _, code, _ := apiErr(t, b); code != "unstorable_answer" {
		t.Errorf("code = %q, want unstorable_answer", code)
	}
	if el := time.Since(began); el > 10*time.Second {
		t.Errorf("answered after %s, want promptly", el)
	}
	var status string
	var pt int64
	if err := s.db.Pool.QueryRow(context.Background(), `SELECT j.status, l.prompt_tokens FROM jobs j
		JOIN usage_ledger l ON l.job_id = j.id WHERE j.id = $1`, resp.Header.Get("Sluice-Job-Id")).Scan(&status, &pt); err != nil {
		t.Fatalf("job row and ledger: %v", err)
	}
	if status != "failed" || pt != 4 {
		t.Errorf("job %s charged %d prompt tokens, want failed and charged the reported 4", status, pt)
	}
}
