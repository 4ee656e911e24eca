package ingress

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/internal/console"
)

// TestConsoleListener_Issue14_7: the console is served where the admin API is: on the
// public port when ADMIN_ADDR is unset, and only on the admin listener when it is set (the
// public port then answers /console/ 404), with its CSP, and /console redirects to
// /console/.
func TestConsoleListener_Issue14_7(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ name, admin, metrics string }{
		{"public", "", ""},
		{"admin apart", "127.0.0.1:0", ""},
		{"admin with metrics", "127.0.0.1:0", "127.0.0.1:0"},
		{"metrics apart only", "", "127.0.0.1:0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			hs := newHarness(t)
			hs.srv.cfg.AdminAddr, hs.srv.cfg.MetricsAddr, hs.srv.cfg.Addr = tc.admin, tc.metrics, "127.0.0.1:0"
			ls, err := hs.srv.openListeners(nil, http.NotFoundHandler(), nil)
			if err != nil {
				t.Fatal(err)
			}
			base := map[string]string{}
			for _, l := range ls {
				base[l.name] = "http://" + l.ln.Addr().String()
			}
			serveListeners(t, hs.srv, ls)
			client := &http.Client{Timeout: 10 * time.Second,
				CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
			get := func(url string) (*http.Response, string) {
				req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, url, nil)
				res, err := client.Do(req)
				if err != nil {
					t.Fatalf("GET %s: %v", url, err)
				}
				defer res.Body.Close()
				b, _ := io.ReadAll(res.Body)
				return res, string(b)
			}
			at, elsewhere := base["public"], ""
			switch {
			case tc.admin != "" && tc.admin == tc.metrics:
				at, elsewhere = base["admin+metrics"], base["public"]
			case tc.admin != "":
				at, elsewhere = base["admin"], base["public"]
			case tc.metrics != "":
				elsewhere = base["metrics"]
			}
			res, body := get(at + "/console/")
			if res.StatusCode != 200 || !strings.Contains(body, `id="signin-form"`) ||
				res.Header.Get("Content-Security-Policy") != console.CSP {
				t.Errorf("GET /console/ on %s = %d (CSP %q)", at, res.StatusCode, res.Header.Get("Content-Security-Policy"))
			}
			if res, _ := get(at + "/console/js/api.js"); res.StatusCode != 200 {
				t.Errorf("GET /console/js/api.js = %d", res.StatusCode)
			}
			if res, _ := get(at + "/console"); res.StatusCode/100 != 3 ||
				res.Header.Get("Location") != "/console/" {
				t.Errorf("GET /console = %d to %q, want a redirect to /console/", res.StatusCode, res.Header.Get("Location"))
			}
			if elsewhere != "" {
				if res, _ := get(elsewhere + "/console/"); res.StatusCode != http.StatusNotFound {
					t.Errorf("GET /console/ on %s (not the admin listener) = %d, want 404", elsewhere, res.StatusCode)
				}
			}
		})
	}
}
