package ingress

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"
)

// opsMaxConns caps the connections open at once on the admin and metrics listeners, which
// only the operator's tools use.
const opsMaxConns = 64

// defaultMaxConns is INGRESS_MAX_CONNS's default, for a Config not read from the environment.
const defaultMaxConns = 8192

// listener is one address the ingress serves, and its server.
type listener struct {
	name string // "public", "admin", "metrics" or "admin+metrics"
	ln   net.Listener
	srv  *http.Server
}

// openListeners opens the ingress's listeners: the public one (public if not nil, else
// INGRESS_ADDR) with the API, /healthz, /readyz and — unless moved — /metrics and /admin;
// and, when METRICS_ADDR or ADMIN_ADDR is set, one for each (one for both if they are the
// same address), the public port then answering those routes 404. metrics serves /metrics;
// refused is called for each connection the per-IP cap refuses. On error nothing is left
// open.
func (s *Server) openListeners(public net.Listener, metrics http.Handler, refused func()) ([]*listener, error) {
	cfg := s.cfg
	if public == nil {
		var err error
		if public, err = net.Listen("tcp", cfg.Addr); err != nil {
			return nil, fmt.Errorf("listen on %s: %w", cfg.Addr, err)
		}
	}
	if cfg.MaxConnsPerIP > 0 {
		public = LimitPerIP(public, cfg.MaxConnsPerIP, refused)
	}
	// net/http's own 4xx in the API's shape.
	public = ShapeRawErrors(LimitListener(public, cmp.Or(cfg.MaxConns, defaultMaxConns)))
	publicH := s.Handler()
	if cfg.MetricsAddr == "" {
		mux := http.NewServeMux()
		mux.Handle("GET /metrics", s.guardWrites(metrics))
		mux.Handle("/", publicH)
		publicH = mux
	}
	out := []*listener{{name: "public", ln: public, srv: s.newHTTPServer(publicH)}}
	closeAll := func() {
		for _, l := range out {
			_ = l.ln.Close()
		}
	}
	type ops struct {
		admin   bool
		metrics http.Handler
	}
	var addrs []string
	byAddr := map[string]*ops{}
	for _, a := range []struct {
		addr string
		set  func(*ops)
	}{
		{cfg.AdminAddr, func(o *ops) { o.admin = true }},
		{cfg.MetricsAddr, func(o *ops) { o.metrics = metrics }},
	} {
		if a.addr == "" {
			continue
		}
		if byAddr[a.addr] == nil {
			byAddr[a.addr] = &ops{}
			addrs = append(addrs, a.addr)
		}
		a.set(byAddr[a.addr])
	}
	for _, addr := range addrs {
		o := byAddr[addr]
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			closeAll()
			return nil, fmt.Errorf("listen on %s: %w", addr, err)
		}
		name := "admin+metrics"
		switch {
		case o.metrics == nil:
			name = "admin"
		case !o.admin:
			name = "metrics"
		}
		out = append(out, &listener{name: name, ln: ShapeRawErrors(LimitListener(ln, opsMaxConns)),
			srv: s.newHTTPServer(s.opsHandler(o.admin, o.metrics))})
	}
	return out, nil
}

// opsHandler serves the admin API and the console (if admin) and /metrics (if metrics is not nil) on a
// listener of their own; every other path is a 404.
func (s *Server) opsHandler(admin bool, metrics http.Handler) http.Handler {
	mux := http.NewServeMux()
	if admin {
		s.adminRoutes(func(pattern string, h http.HandlerFunc) {
			mux.Handle(pattern, s.instrument(pattern, s.checkInput(pattern, h)))
		})
		s.consoleRoutes(mux)
	}
	if metrics != nil {
		mux.Handle("GET /metrics", metrics)
	}
	mux.Handle("/", s.instrument("other", s.notFound))
	return s.guardWrites(s.withRequestID(s.recoverPanics(mux)))
}

// newHTTPServer returns the server of one listener: HTTP/1, and with INGRESS_H2C also
// HTTP/2 without TLS for clients that ask for it by prior knowledge (a proxy in front that
// speaks h2c), with at most h2cStreams requests at once on one connection.
func (s *Server) newHTTPServer(h http.Handler) *http.Server {
	protocols := new(http.Protocols)
	protocols.SetHTTP1(true)
	protocols.SetUnencryptedHTTP2(s.cfg.H2C)
	return &http.Server{
		Protocols: protocols,
		// An h2c connection whose client reads nothing is closed after the stall limit, as
		// each of its streams is (guardWrites).
		HTTP2: &http.HTTP2Config{MaxConcurrentStreams: h2cStreams,
			WriteByteTimeout: cmp.Or(s.cfg.WriteStallTimeout, defaultWriteStall)},
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       60 * time.Second, // whole request incl. body; responses may stream far longer
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
}

// serveAll serves every listener, each on a goroutine of wg, until ctx is done or one
// fails; then it shuts them all down, giving in-flight requests grace, and returns once
// every server has returned. It returns the first serving error, if one ended it.
func (s *Server) serveAll(ctx context.Context, wg *sync.WaitGroup, ls []*listener, grace time.Duration, ready func(string)) error {
	errc := make(chan error, len(ls))
	for _, l := range ls {
		wg.Go(func() { errc <- l.srv.Serve(l.ln) })
		s.log.InfoContext(ctx, "ingress listening", "listener", l.name, "addr", l.ln.Addr().String())
	}
	if ready != nil {
		ready(ls[0].ln.Addr().String())
	}
	var first error
	select {
	case first = <-errc:
		first = fmt.Errorf("serve: %w", first)
		grace = 0
	case <-ctx.Done():
		s.log.InfoContext(ctx, "ingress shutting down", "grace", grace)
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), grace)
	defer cancel()
	cut := false
	for _, l := range ls {
		if err := l.srv.Shutdown(sctx); err != nil {
			_ = l.srv.Close() // grace over: cut what is left
			cut = true
		}
	}
	if cut {
		// Close does not wait for handlers; their requests are cancelled now, so they end
		// quickly. Wait for them (bounded) before the dependencies they use are closed.
		for deadline := time.Now().Add(5 * time.Second); s.inFlight.Load() > 0 && time.Now().Before(deadline); {
			time.Sleep(10 * time.Millisecond)
		}
	}
	n := len(ls)
	if first != nil {
		n-- // already received
	}
	for range n {
		if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) && first == nil {
			first = fmt.Errorf("serve: %w", err)
		}
	}
	return first
}

// goroutineBound is the most goroutines an ingress of cfg runs (README, "How it holds its
// bounds"): per client connection one, plus one background reader while a request is in
// progress (with INGRESS_H2C, up to 100 requests per connection, each on its own
// goroutine); 64 for the rest; and two per connection of each ops listener (METRICS_ADDR,
// ADMIN_ADDR; one if they are the same address).
func goroutineBound(cfg Config) int {
	perConn := 2
	if cfg.H2C {
		perConn = 102
	}
	n := perConn*cmp.Or(cfg.MaxConns, defaultMaxConns) + 64
	if cfg.AdminAddr != "" {
		n += 2 * opsMaxConns
	}
	if cfg.MetricsAddr != "" && cfg.MetricsAddr != cfg.AdminAddr {
		n += 2 * opsMaxConns
	}
	return n
}
