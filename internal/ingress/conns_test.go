package ingress

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"sync/atomic"
	"testing"
	"time"
)

// TestPerIPConnCap_Issue9_8: with INGRESS_MAX_CONNS_PER_IP=2, a third connection from
// 127.0.0.1 is closed at accept while the first two keep working (keep-alive /healthz
// calls); once one of them closes, a new one is served. Each place is given back once.
func TestPerIPConnCap_Issue9_8(t *testing.T) {
	t.Parallel()
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var refused atomic.Int64
	perIP := LimitPerIP(raw, 2, func() { refused.Add(1) }).(*perIPListener)
	ln := ShapeRawErrors(LimitListener(perIP, 64)) // as openListeners stacks them
	srv := &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, `{"status":"ok"}`)
	})}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	t.Cleanup(func() {
		_ = srv.Close()
		if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("Serve: %v", err)
		}
	})
	addr := raw.Addr().String()
	local := netip.MustParsePrefix("127.0.0.1/32")

	type client struct {
		c net.Conn
		r *bufio.Reader
	}
	dial := func() *client {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
		return &client{c, bufio.NewReader(c)}
	}
	// healthz makes one keep-alive request on c and reports whether it was answered 200.
	healthz := func(c *client) error {
		_ = c.c.SetDeadline(time.Now().Add(20 * time.Second))
		if _, err := io.WriteString(c.c, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
			return err
		}
		res, err := http.ReadResponse(c.r, nil)
		if err != nil {
			return err
		}
		defer res.Body.Close()
		if _, err := io.Copy(io.Discard, res.Body); err != nil {
			return err
		}
		if res.StatusCode != http.StatusOK {
			return fmt.Errorf("status %d", res.StatusCode)
		}
		return nil
	}

	a, b := dial(), dial()
	for _, c := range []*client{a, b} {
		if err := healthz(c); err != nil {
			t.Fatalf("connection under the cap: %v", err)
		}
	}
	third := dial()
	if err := healthz(third); err == nil {
		t.Fatal("a third connection from one address was served, over INGRESS_MAX_CONNS_PER_IP=2")
	}
	if refused.Load() != 1 {
		t.Errorf("refused %d connections, want 1", refused.Load())
	}
	for _, c := range []*client{a, b} { // the first two are untouched
		if err := healthz(c); err != nil {
			t.Fatalf("connection under the cap, after a refusal: %v", err)
		}
	}
	if n := perIP.count(local); n != 2 {
		t.Errorf("%d connections counted for 127.0.0.1, want 2", n)
	}

	// One closes: its place comes back (once the server has seen the close), and a new
	// connection is served.
	_ = a.c.Close()
	if !waitFor(20*time.Second, func() bool { return perIP.count(local) == 1 }) {
		t.Fatalf("%d connections counted after one closed, want 1", perIP.count(local))
	}
	if err := healthz(dial()); err != nil {
		t.Fatalf("a new connection after one closed: %v", err)
	}
	if err := healthz(b); err != nil {
		t.Fatalf("connection under the cap: %v", err)
	}
}

// TestPerIPConnReleasedOnce_Issue9_8: closing a connection twice gives its place back once,
// and a refused connection takes none.
func TestPerIPConnReleasedOnce_Issue9_8(t *testing.T) {
	t.Parallel()
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := LimitPerIP(raw, 1, nil).(*perIPListener)
	t.Cleanup(func() { _ = l.Close() })
	local := netip.MustParsePrefix("127.0.0.1/32")
	accept := func() net.Conn {
		t.Helper()
		c, err := l.Accept()
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	dial := func() net.Conn {
		t.Helper()
		c, err := net.Dial("tcp", raw.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
		return c
	}
	dial()
	first := accept()
	// Over the cap: Accept closes it, and waits for the next.
	over := dial()
	next := make(chan net.Conn, 1)
	go func() {
		c, _ := l.Accept()
		next <- c
	}()
	_ = over.SetReadDeadline(time.Now().Add(20 * time.Second))
	if _, err := over.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("the connection over the cap was not closed: read %v", err)
	}
	if n := l.count(local); n != 1 {
		t.Fatalf("count %d with one open and one refused, want 1", n)
	}
	_ = first.Close()
	_ = first.Close()
	if n := l.count(local); n != 0 {
		t.Fatalf("count %d after closing twice, want 0", n)
	}
	want := dial()
	second := <-next
	if second == nil {
		t.Fatal("Accept failed")
	}
	if second.RemoteAddr().String() != want.LocalAddr().String() {
		t.Errorf("accepted %s, want the connection dialled after the close (%s)", second.RemoteAddr(), want.LocalAddr())
	}
	if n := l.count(local); n != 1 {
		t.Fatalf("count %d, want 1", n)
	}
	_ = second.Close()
	if n := l.count(local); n != 0 {
		t.Fatalf("count %d after the last close, want 0", n)
	}
}

func TestClientPrefix(t *testing.T) {
	t.Parallel()
	tests := []struct {
		addr string
		want string
	}{
		{"192.0.2.7:443", "192.0.2.7/32"},
		{"[::ffff:192.0.2.7]:443", "192.0.2.7/32"},
		{"[2001:db8:1:2:3:4:5:6]:443", "2001:db8:1:2::/64"},
		{"[fe80::1%eth0]:443", "fe80::/64"},
	}
	for _, tt := range tests {
		ap := netip.MustParseAddrPort(tt.addr)
		got, ok := clientPrefix(net.TCPAddrFromAddrPort(ap))
		if !ok || got.String() != tt.want {
			t.Errorf("clientPrefix(%s) = %s, %v; want %s", tt.addr, got, ok, tt.want)
		}
	}
	if _, ok := clientPrefix(&net.UnixAddr{Name: "/tmp/x", Net: "unix"}); ok {
		t.Error("a unix socket address is counted")
	}
}
