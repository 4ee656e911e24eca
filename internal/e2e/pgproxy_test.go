package e2e

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
)

// pgProxy is a TCP proxy in front of the test Postgres that can take it away: Down cuts every
// live connection and resets new ones until Up. Pointing a binary's DATABASE_URL at it
// simulates a Postgres restart or a network partition for that binary alone, while the
// test's own pool (s.db.Pool) still reaches Postgres directly.
type pgProxy struct {
	ln      net.Listener
	network string // of the real server: "tcp", or "unix" for a socket directory
	target  string

	mu    sync.Mutex
	down  bool
	conns map[net.Conn]struct{} // both sides of every live pair
	wg    sync.WaitGroup        // the accept loop and every copying goroutine
}

// newPGProxy starts a proxy to the Postgres that dbURL names; it is closed, and every
// goroutine it started has exited, when the test ends.
func newPGProxy(t *testing.T, dbURL string) *pgProxy {
	t.Helper()
	cfg, err := pgconn.ParseConfig(dbURL)
	if err != nil {
		t.Fatalf("parse %s: %v", dbURL, err)
	}
	p := &pgProxy{network: "tcp", target: net.JoinHostPort(cfg.Host, strconv.Itoa(int(cfg.Port))),
		conns: map[net.Conn]struct{}{}}
	if strings.HasPrefix(cfg.Host, "/") {
		p.network, p.target = "unix", fmt.Sprintf("%s/.s.PGSQL.%d", cfg.Host, cfg.Port)
	}
	if p.ln, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	p.wg.Go(p.accept)
	t.Cleanup(func() {
		_ = p.ln.Close()
		p.cutAll()
		p.wg.Wait()
	})
	return p
}

// URL returns dbURL (same database, user and options, search_path included) with its host
// and port replaced by the proxy's.
func (p *pgProxy) URL(t *testing.T, dbURL string) string {
	t.Helper()
	addr := p.ln.Addr().(*net.TCPAddr)
	if !strings.Contains(dbURL, "://") { // keyword/value form: later settings win
		return fmt.Sprintf("%s host=127.0.0.1 port=%d", dbURL, addr.Port)
	}
	u, err := url.Parse(dbURL)
	if err != nil {
		t.Fatalf("parse %s: %v", dbURL, err)
	}
	u.Host = addr.String()
	q := u.Query()
	q.Del("host") // a host in the query would override the one in the authority
	q.Del("port")
	u.RawQuery = q.Encode()
	return u.String()
}

// Down closes every live connection and resets new ones until Up.
func (p *pgProxy) Down() {
	p.mu.Lock()
	p.down = true
	p.mu.Unlock()
	p.cutAll()
}

// Up lets new connections through again.
func (p *pgProxy) Up() {
	p.mu.Lock()
	p.down = false
	p.mu.Unlock()
}

func (p *pgProxy) cutAll() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		reset(c)
	}
	clear(p.conns)
}

// reset closes c abortively, so the peer sees a connection reset rather than a clean EOF.
func reset(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = c.Close()
}

func (p *pgProxy) accept() {
	for {
		client, err := p.ln.Accept()
		if err != nil {
			return // the listener is closed: the test is over
		}
		p.mu.Lock()
		down := p.down
		p.mu.Unlock()
		if down {
			reset(client)
			continue
		}
		server, err := net.Dial(p.network, p.target)
		if err != nil {
			reset(client)
			continue
		}
		p.mu.Lock()
		if p.down { // went down while dialling
			p.mu.Unlock()
			reset(client)
			reset(server)
			continue
		}
		p.conns[client], p.conns[server] = struct{}{}, struct{}{}
		p.mu.Unlock()
		p.wg.Go(func() { p.pipe(server, client) })
		p.wg.Go(func() { p.pipe(client, server) })
	}
}

// pipe copies src to dst until either side fails, then closes both.
func (p *pgProxy) pipe(dst, src net.Conn) {
	_, err := io.Copy(dst, src)
	if err != nil && !errors.Is(err, net.ErrClosed) {
		reset(dst)
	}
	p.mu.Lock()
	delete(p.conns, dst)
	delete(p.conns, src)
	p.mu.Unlock()
	_ = dst.Close()
	_ = src.Close()
}
