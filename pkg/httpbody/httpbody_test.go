package httpbody_test

import (
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/sluicehq/sluice/pkg/httpbody"
)

// countingBody records how much was read and whether it was closed.
type countingBody struct {
	r      io.Reader
	read   atomic.Int64
	closed atomic.Bool
}

func (b *countingBody) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	b.read.Add(int64(n))
	return n, err
}

func (b *countingBody) Close() error {
	b.closed.Store(true)
	return nil
}

// TestCloseDrainsABoundedRemainder: a small unread remainder is drained and the body closed;
// an endless body is read no further than 64 KiB before it is closed.
func TestCloseDrainsABoundedRemainder(t *testing.T) {
	t.Parallel()
	small := &countingBody{r: strings.NewReader(`{"error":{"message":"rate limited"}}`)}
	httpbody.Close(&http.Response{Body: small})
	if !small.closed.Load() || small.read.Load() != int64(len(`{"error":{"message":"rate limited"}}`)) {
		t.Errorf("small body: read %d, closed %v; want all of it read, then closed", small.read.Load(), small.closed.Load())
	}
	endless := &countingBody{r: zeros{}}
	httpbody.Close(&http.Response{Body: endless})
	if !endless.closed.Load() || endless.read.Load() != 64<<10 {
		t.Errorf("endless body: read %d, closed %v; want 64 KiB, then closed", endless.read.Load(), endless.closed.Load())
	}
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) { clear(p); return len(p), nil }

// TestCloseReusesTheConnection: after Close, a keep-alive client's next request to the same
// server goes over the same connection.
func TestCloseReusesTheConnection(t *testing.T) {
	t.Parallel()
	var conns atomic.Int64
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusTooManyRequests)
		_, _ = io.WriteString(w, strings.Repeat("x", 1000))
	}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	defer srv.Close()
	client := srv.Client()
	for range 3 {
		resp, err := client.Get(srv.URL) //nolint:bodyclose // released by httpbody.Close
		if err != nil {
			t.Fatal(err)
		}
		httpbody.Close(resp)
	}
	if n := conns.Load(); n != 1 {
		t.Errorf("%d connections for 3 requests, want 1", n)
	}
}
