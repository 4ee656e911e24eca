package providers_test

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/sluicehq/sluice/pkg/providers"
	"github.com/sluicehq/sluice/pkg/secret"
)

// TestFirstByteTimeout_Issue9_0: a call whose upstream never begins its answer fails with
// ErrFirstByte after FirstByteTimeout (retryable, so it counts against the channel's circuit),
// while an answer that has begun may take longer than FirstByteTimeout as long as bytes keep
// coming within IdleTimeout.
func TestFirstByteTimeout_Issue9_0(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if b, _ := io.ReadAll(r.Body); bytes.Contains(b, []byte(`"user":"hang"`)) {
			select {
			case <-release:
			case <-r.Context().Done():
			}
			return
		}
		// A stream that begins at once and then takes 4 × 150 ms = 600 ms in all.
		w.Header().Set("Content-Type", "text/event-stream")
		for i := range 5 {
			if i > 0 {
				time.Sleep(150 * time.Millisecond)
			}
			_, _ = w.Write([]byte(`data: {"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"x"}}]}` + "\n\n"))
			w.(http.Flusher).Flush()
		}
		_, _ = w.Write([]byte("data: [DONE]\n\n"))
	}))
	t.Cleanup(up.Close)
	limits := providers.Limits{FirstByteTimeout: 300 * time.Millisecond, IdleTimeout: 10 * time.Second}
	reg := providers.NewRegistry(providers.ClientConfig{}, limits)
	t.Cleanup(reg.CloseIdle)
	body := []byte(`{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true}`)

	hang := &headerProvider{base: up.URL + "/v1", header: "hang", reg: reg}
	began := time.Now()
	_, err := hang.do(t, body)
	e, ok := errors.AsType[*providers.Error](err)
	if !ok || !errors.Is(err, providers.ErrFirstByte) || !e.Retryable() {
		t.Fatalf("hung call: %v, want a retryable *providers.Error wrapping ErrFirstByte", err)
	}
	if el := time.Since(began); el > 8*time.Second {
		t.Errorf("hung call took %s to fail, want about the 300 ms first-byte timeout", el)
	}

	slow := &headerProvider{base: up.URL + "/v1", header: "", reg: reg}
	if _, err := slow.do(t, body); err != nil {
		t.Fatalf("an answer that began at once and lasted longer than the first-byte timeout failed: %v", err)
	}
}

// headerProvider calls the openai adapter; header, if set, goes in the body's "user" member,
// which tells the test upstream to hang.
type headerProvider struct {
	base, header string
	reg          *providers.Registry
}

func (h *headerProvider) do(t *testing.T, body []byte) (*providers.Result, error) {
	t.Helper()
	p, err := h.reg.Build(providers.KindOpenAI, h.base, secret.Secret("sk-test"))
	if err != nil {
		t.Fatal(err)
	}
	if h.header != "" {
		body = append(body[:len(body)-1], []byte(`,"user":"`+h.header+`"}`)...)
	}
	return p.Do(t.Context(), &providers.Request{Endpoint: "/v1/chat/completions", Body: body, Stream: true},
		func(providers.Event) error { return nil })
}
