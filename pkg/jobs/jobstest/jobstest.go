// Package jobstest starts an embedded NATS JetStream server for tests.
package jobstest

import (
	"net"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// Server is an embedded JetStream server listening on a random loopback port.
type Server struct {
	*server.Server
	// URL is the client URL, for binaries started by the test.
	URL  string
	dir  string
	port int
}

// NewServer starts a JetStream server whose store lives in a temp dir; it is shut down when
// the test ends.
func NewServer(tb testing.TB) *Server {
	tb.Helper()
	return newServer(tb, tb.TempDir(), -1)
}

func newServer(tb testing.TB, dir string, port int) *Server {
	tb.Helper()
	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: port, JetStream: true,
		StoreDir: dir, NoLog: true, NoSigs: true, MaxPayload: 1 << 20})
	if err != nil {
		tb.Fatalf("nats server: %v", err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		tb.Fatal("nats server not ready")
	}
	s := &Server{Server: ns, URL: ns.ClientURL(), dir: dir, port: ns.Addr().(*net.TCPAddr).Port}
	tb.Cleanup(s.Stop)
	return s
}

// Stop shuts the server down and waits for it (idempotent).
func (s *Server) Stop() {
	s.Shutdown()
	s.WaitForShutdown()
}

// NewConn starts a server and connects to it; both are closed when the test ends.
func NewConn(tb testing.TB) (*Server, *nats.Conn) {
	tb.Helper()
	s := NewServer(tb)
	return s, Connect(tb, s.URL)
}

// Connect dials url with reconnects on; the connection is closed when the test ends.
func Connect(tb testing.TB, url string) *nats.Conn {
	tb.Helper()
	nc, err := nats.Connect(url, nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		tb.Fatalf("connect to nats: %v", err)
	}
	tb.Cleanup(nc.Close)
	return nc
}

// Restart shuts the server down and starts a new one on the same port and store directory,
// as a NATS restart would; clients with reconnects on find it again on their own. down, if
// set, runs while the server is away.
func (s *Server) Restart(tb testing.TB, down func()) *Server {
	tb.Helper()
	s.Stop()
	if down != nil {
		down()
	}
	return newServer(tb, s.dir, s.port)
}
