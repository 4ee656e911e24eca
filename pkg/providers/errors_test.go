package providers_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sluicehq/sluice/pkg/providers"
	"github.com/sluicehq/sluice/pkg/secret"
)

// TestErrorHidesUpstreamURL checks that an upstream call that got no answer fails with an
// error whose text, which clients see in a 502, names the provider and what went wrong but
// nothing of the channel's base URL: no host, port, path or query. The operator's logs get
// the host and path (Detail, LogValue), but never the query, which may hold a key.
func TestErrorHidesUpstreamURL(t *testing.T) {
	t.Parallel()
	// An upstream that takes the request and never answers, so the client's
	// ResponseHeaderTimeout fires.
	release := make(chan struct{})
	silent := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body) // then the server notices the client hang up
		select {
		case <-r.Context().Done():
		case <-release:
		}
	}))
	t.Cleanup(silent.Close)
	t.Cleanup(func() { close(release) }) // runs first
	// An address nothing listens on.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refused := ln.Addr().String()
	if err := ln.Close(); err != nil {
		t.Fatal(err)
	}

	const (
		path        = "/internal/route-7f3"
		secretValue = "s3cr3t-5f2a9c"
	)
	tests := []struct {
		name  string
		host  string // host:port of the base URL
		path  string
		wants string // what the client is told went wrong
	}{
		{"connection refused", refused, path, "connection refused"},
		{"timeout", silent.Listener.Addr().String(), path, "timed out"},
		{"bad base URL", refused, path + "/%zz", "invalid base URL"},
	}
	kinds := []string{providers.KindOpenAI, providers.KindAzure, providers.KindAnthropic, providers.KindGemini}
	reg := providers.NewRegistry(providers.ClientConfig{ResponseHeaderTimeout: 100 * time.Millisecond}, providers.Limits{})
	t.Cleanup(reg.CloseIdle)
	for _, tt := range tests {
		for _, kind := range kinds {
			t.Run(tt.name+"/"+kind, func(t *testing.T) {
				t.Parallel()
				host, port, _ := net.SplitHostPort(tt.host)
				base := "http://" + tt.host + tt.path + "?api-version=2024-10-21&token=" + secretValue
				p, err := reg.Build(kind, base, secret.Secret("sk-channel-key"))
				if err != nil && tt.name == "bad base URL" { // refused up front (azure)
					if strings.Contains(err.Error(), host) || strings.Contains(err.Error(), secretValue) {
						t.Errorf("Build error = %q, which shows the base URL", err)
					}
					return
				}
				if err != nil {
					t.Fatalf("Build(%q): %v", base, err)
				}
				body := []byte(`{"model":"m","messages":[{"role":"user","content":"hi"}]}`)
				_, err = p.Do(t.Context(), &providers.Request{Endpoint: "/v1/chat/completions", Body: body},
					func(providers.Event) error { return nil })
				e, ok := errors.AsType[*providers.Error](err)
				if !ok {
					t.Fatalf("Do error = %v (%T), want a *providers.Error", err, err)
				}
				if errors.Is(err, context.Canceled) {
					t.Errorf("Do error = %v wraps context.Canceled: the real cause was lost", err)
				}
				msg := e.Error()
				for _, leak := range []string{host, port, "internal", "route-7f3", "api-version", "token", secretValue, "http://"} {
					if strings.Contains(msg, leak) {
						t.Errorf("Error() = %q, which shows %q of the base URL", msg, leak)
					}
				}
				if want := kind + " upstream: "; !strings.HasPrefix(msg, want) || !strings.Contains(msg, tt.wants) {
					t.Errorf("Error() = %q, want %q… naming %q", msg, want, tt.wants)
				}
				if e.StatusCode != 0 || !e.Retryable() {
					t.Errorf("StatusCode = %d, Retryable() = %v; want 0, true", e.StatusCode, e.Retryable())
				}

				var logged bytes.Buffer
				slog.New(slog.NewJSONHandler(&logged, nil)).Info("upstream failed", "err", err)
				for what, s := range map[string]string{"Detail()": e.Detail(), "the log line": logged.String()} {
					if !strings.Contains(s, tt.host) || !strings.Contains(s, tt.path) {
						t.Errorf("%s = %q, want the host and path for the operator", what, s)
					}
					if strings.Contains(s, secretValue) || strings.Contains(s, "api-version") {
						t.Errorf("%s = %q, which shows the base URL's query", what, s)
					}
				}
			})
		}
	}
}

// TestErrorPublicCause checks how Error tells causes that the live test above cannot
// provoke: a network error names no address, and Sluice's own causes are told as they are.
func TestErrorPublicCause(t *testing.T) {
	t.Parallel()
	addr := &net.TCPAddr{IP: net.IPv4(10, 0, 0, 5), Port: 8000}
	post := func(err error) error {
		return &url.Error{Op: "Post", URL: "https://vllm.corp.internal:8000/v1/chat/completions?key=k", Err: err}
	}
	tests := []struct {
		name string
		err  error
		want string
	}{
		{"host not found", post(&net.OpError{Op: "dial", Net: "tcp",
			Err: &net.DNSError{Err: "no such host", Name: "vllm.corp.internal", IsNotFound: true}}), "no response: host not found"},
		{"lookup failed", post(&net.OpError{Op: "dial", Net: "tcp",
			Err: &net.DNSError{Err: "server misbehaving", Name: "vllm.corp.internal", Server: "10.0.0.53:53"}}), "no response: host lookup failed"},
		{"closed before answering", post(io.EOF), "no response: connection closed"},
		{"reset mid-answer", &net.OpError{Op: "read", Net: "tcp", Addr: addr,
			Err: os.NewSyscallError("read", syscall.ECONNRESET)}, "connection reset"},
		{"other network error", post(&net.OpError{Op: "dial", Net: "tcp", Addr: addr,
			Err: os.NewSyscallError("connect", syscall.EHOSTUNREACH)}), "no response: connection failed"},
		{"idle", providers.ErrIdle, providers.ErrIdle.Error()},
		{"deadline", context.DeadlineExceeded, "context deadline exceeded"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := &providers.Error{Provider: "openai", Err: tt.err}
			if got, want := e.Error(), "openai upstream: "+tt.want; got != want {
				t.Errorf("Error() = %q, want %q", got, want)
			}
			if d := e.Detail(); strings.Contains(d, "key=k") || !strings.HasPrefix(d, "openai upstream: ") {
				t.Errorf("Detail() = %q, want the cause without the URL's query", d)
			}
		})
	}
}
