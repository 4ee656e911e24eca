package ingress

import (
	"bufio"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestRawErrorsShaped_Issue17_6: the errors net/http answers by itself, before any handler
// runs, come in the API's error shape with an X-Request-Id, as every other error does; and
// an ordinary answer passes through the connection untouched.
func TestRawErrorsShaped_Issue17_6(t *testing.T) {
	t.Parallel()
	hs := newHarness(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	// As Run serves (the same listener wrapping, the same header limit).
	srv := &http.Server{Handler: hs.h, ReadHeaderTimeout: 10 * time.Second, MaxHeaderBytes: 64 << 10}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ShapeRawErrors(LimitListener(ln, 64))) }()
	t.Cleanup(func() {
		_ = srv.Close()
		if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("serve: %v", err)
		}
	})
	send := func(t *testing.T, raw string) (*http.Response, []byte) {
		t.Helper()
		c, err := net.DialTimeout("tcp", ln.Addr().String(), 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.WriteString(c, raw); err != nil {
			t.Fatal(err)
		}
		res, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatalf("read response: %v", err)
		}
		defer res.Body.Close()
		b, err := io.ReadAll(res.Body)
		if err != nil {
			t.Fatalf("read body: %v", err)
		}
		return res, b
	}
	tests := []struct {
		name   string
		raw    string
		status int
		code   string
	}{
		{"control byte in a header value", "GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: a\x01b\r\n\r\n", 400, "malformed_request"},
		{"bad header name", "GET /healthz HTTP/1.1\r\nHost: x\r\nBad Name: v\r\n\r\n", 400, "malformed_request"},
		{"malformed request line", "GARBAGE\r\n\r\n", 400, "malformed_request"},
		{"missing Host", "GET /healthz HTTP/1.1\r\n\r\n", 400, "malformed_request"},
		{"two Host headers", "GET /healthz HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n", 400, "malformed_request"},
		{"headers too large", "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + strings.Repeat("a", 80<<10) + "\r\n\r\n", 431, "request_header_too_large"},
		{"gzip, chunked", "POST /v1/jobs HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501, "unsupported_transfer_encoding"},
		{"unknown HTTP version", "GET /healthz HTTP/2.5\r\nHost: x\r\n\r\n", 505, "http_version_not_supported"},
		{"unknown Expect", "POST /v1/jobs HTTP/1.1\r\nHost: x\r\nExpect: teapot\r\nContent-Length: 2\r\n\r\n{}", 417, "expectation_failed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			res, b := send(t, tt.raw)
			var e apiErrorBody
			if res.StatusCode != tt.status || json.Unmarshal(b, &e) != nil || e.Error.Message == "" ||
				e.Error.Type != "invalid_request_error" || e.Error.Code == nil || *e.Error.Code != tt.code {
				t.Fatalf("answer %d %q, want a %d API error with code %s", res.StatusCode, b, tt.status, tt.code)
			}
			if res.Header.Get("X-Request-Id") == "" || res.Header.Get("Content-Type") != "application/json" || !res.Close {
				t.Errorf("headers %v: want X-Request-Id, JSON, and Connection: close", res.Header)
			}
		})
	}
	t.Run("ordinary answers pass through", func(t *testing.T) {
		t.Parallel()
		res, b := send(t, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
		if res.StatusCode != 200 || strings.TrimSpace(string(b)) != `{"status":"ok"}` {
			t.Errorf("healthz: %d %q", res.StatusCode, b)
		}
		// A body that spells net/http's plain-text error is still just a body.
		res, b = send(t, "GET /v1/nothing HTTP/1.1\r\nHost: x\r\n\r\n")
		if res.StatusCode != 404 || !strings.Contains(string(b), "unknown_url") {
			t.Errorf("unknown URL: %d %q", res.StatusCode, b)
		}
	})
}

// TestShapeRawErrorLeavesOtherWrites_Issue17_6: only net/http's own complete error texts
// are replaced; anything that merely starts like a response passes unchanged.
func TestShapeRawErrorLeavesOtherWrites_Issue17_6(t *testing.T) {
	t.Parallel()
	for _, b := range []string{
		"HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n200 OK",
		"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n400 Bad Request and more",
		"HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n400 Bad Request",
		"HTTP/1.1 417 Expectation Failed\r\nConnection: close\r\nDate: x\r\nX-Request-Id: r\r\nContent-Length: 0\r\n\r\n",
		"data: HTTP/1.1 400 Bad Request\r\n\r\n",
		`{"id":"x"}`,
	} {
		if _, ok := shapeRawError([]byte(b)); ok {
			t.Errorf("replaced %q", b)
		}
	}
}
