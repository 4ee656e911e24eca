package ingress

import (
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestOpsListeners_Issue9_8: with ADMIN_ADDR and METRICS_ADDR set, /admin and /metrics are
// served only on their own listeners (one, if the addresses are the same) and the public
// port answers them 404; unset, the public port serves them as before.
func TestOpsListeners_Issue9_8(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name, admin, metrics string
		listeners            []string
	}{
		{"unset", "", "", []string{"public"}},
		{"apart", "127.0.0.1:0", "localhost:0", []string{"public", "admin", "metrics"}},
		{"together", "127.0.0.1:0", "127.0.0.1:0", []string{"public", "admin+metrics"}},
		{"admin only", "127.0.0.1:0", "", []string{"public", "admin"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			hs := newHarness(t)
			hs.srv.cfg.AdminAddr, hs.srv.cfg.MetricsAddr = tc.admin, tc.metrics
			hs.srv.cfg.Addr = "127.0.0.1:0"
			metrics := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
				_, _ = io.WriteString(w, "# metrics\n")
			})
			ls, err := hs.srv.openListeners(nil, metrics, nil)
			if err != nil {
				t.Fatal(err)
			}
			base := map[string]string{}
			var names []string
			for _, l := range ls {
				names = append(names, l.name)
				base[l.name] = "http://" + l.ln.Addr().String()
			}
			if strings.Join(names, ",") != strings.Join(tc.listeners, ",") {
				t.Fatalf("listeners %v, want %v", names, tc.listeners)
			}
			serveListeners(t, hs.srv, ls)
			get := func(url string, admin bool) int {
				req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, url, nil)
				if admin {
					req.Header.Set("Authorization", "Bearer "+testAdminToken)
				}
				res, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatalf("GET %s: %v", url, err)
				}
				defer res.Body.Close()
				_, _ = io.Copy(io.Discard, res.Body)
				return res.StatusCode
			}
			adminAt, metricsAt := base["public"], base["public"]
			if tc.admin != "" {
				adminAt = base[map[bool]string{true: "admin+metrics", false: "admin"}[tc.admin == tc.metrics]]
			}
			if tc.metrics != "" {
				metricsAt = base[map[bool]string{true: "admin+metrics", false: "metrics"}[tc.admin == tc.metrics]]
			}
			if got := get(adminAt+"/admin/v1/keys", true); got != http.StatusOK {
				t.Errorf("GET /admin/v1/keys on %s: %d, want 200", adminAt, got)
			}
			if got := get(metricsAt+"/metrics", false); got != http.StatusOK {
				t.Errorf("GET /metrics on %s: %d, want 200", metricsAt, got)
			}
			if tc.admin != "" {
				if got := get(base["public"]+"/admin/v1/keys", true); got != http.StatusNotFound {
					t.Errorf("GET /admin/v1/keys on the public port: %d, want 404", got)
				}
				if got := get(adminAt+"/v1/models", false); got != http.StatusNotFound {
					t.Errorf("GET /v1/models on the admin port: %d, want 404", got)
				}
			}
			if tc.metrics != "" {
				if got := get(base["public"]+"/metrics", false); got != http.StatusNotFound {
					t.Errorf("GET /metrics on the public port: %d, want 404", got)
				}
			}
			if got := get(base["public"]+"/healthz", false); got != http.StatusOK {
				t.Errorf("GET /healthz on the public port: %d, want 200", got)
			}
		})
	}
}

// TestOpsListenerBindError_Issue9_8: an ADMIN_ADDR that cannot be bound fails the start,
// naming it, and leaves nothing open.
func TestOpsListenerBindError_Issue9_8(t *testing.T) {
	t.Parallel()
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	hs := newHarness(t)
	hs.srv.cfg.AdminAddr = taken.Addr().String()
	pub, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := hs.srv.openListeners(pub, http.NotFoundHandler(), nil); err == nil || !strings.Contains(err.Error(), hs.srv.cfg.AdminAddr) {
		t.Fatalf("openListeners with a taken ADMIN_ADDR: %v, want an error naming it", err)
	}
	if _, err := pub.Accept(); err == nil {
		t.Error("the public listener was left open")
	}
}

// contextWithCancel returns a context cancelled by stop (or at the test's end).
func contextWithCancel(t *testing.T) (ctx context.Context, stop func()) {
	ctx, stop = context.WithCancel(context.Background())
	t.Cleanup(stop)
	return ctx, stop
}

// serveListeners serves ls with srv until the test ends, then shuts them down and checks
// that serveAll returned cleanly.
func serveListeners(t *testing.T, srv *Server, ls []*listener) {
	t.Helper()
	ctx, stop := contextWithCancel(t)
	var wg sync.WaitGroup
	served := make(chan error, 1)
	wg.Go(func() { served <- srv.serveAll(ctx, &wg, ls, 5*time.Second, nil) })
	t.Cleanup(func() {
		stop()
		wg.Wait()
		if err := <-served; err != nil {
			t.Errorf("serveAll: %v", err)
		}
	})
}
