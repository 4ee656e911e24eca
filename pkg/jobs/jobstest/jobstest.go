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
func NewServer(t testing.TB) *Server {
	t.Helper()
	return newServer(t, t.TempDir(), -1)
}

func newServer(t testing.TB, dir string, port int) *Server {
	t.Helper()
	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: port, JetStream: true,
		StoreDir: dir, NoLog: true, NoSigs: true, MaxPayload: 1 << 20})
	if err != nil {
		t.Fatalf("nats server: %v", err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats server not ready")
	}
	s := &Server{Server: ns, URL: ns.ClientURL(), dir: dir, port: ns.Addr().(*net.TCPAddr).Port}
	t.Cleanup(s.Stop)
	return s
}

// Stop shuts the server down and waits for it (idempotent).
func (s *Server) Stop() {
	s.Shutdown()
	s.WaitForShutdown()
}

// NewConn starts a server and connects to it; both are closed when the test ends.
func NewConn(t testing.TB) (*Server, *nats.Conn) {
	t.Helper()
	s := NewServer(t)
	return s, Connect(t, s.URL)
}

// Connect dials url with reconnects on; the connection is closed when the test ends.
func Connect(t testing.TB, url string) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(url, nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		t.Fatalf("connect to nats: %v", err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// Restart shuts the server down and starts a new one on the same port and store directory,
// as a NATS restart would; clients with reconnects on find it again on their own. down, if
// set, runs while the server is away.
func (s *Server) Restart(t testing.TB, down func()) *Server {
	t.Helper()
	s.Stop()
	if down != nil {
		down()
	}
	return newServer(t, s.dir, s.port)
}
