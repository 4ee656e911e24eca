package console

import (
	"io/fs"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
)

func get(t *testing.T, h http.Handler, path string, hdr ...string) *httptest.ResponseRecorder {
	t.Helper()
	req := httptest.NewRequest(http.MethodGet, path, nil)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

// TestHandlerHeaders_Issue14_5: every file, and a 404, carries the strict CSP and the other
// security headers; files have their content type, no-cache and an ETag that answers 304.
func TestHandlerHeaders_Issue14_5(t *testing.T) {
	t.Parallel()
	h := Handler()
	for _, tc := range []struct {
		path, ctype string
		status      int
	}{
		{"/console/", "text/html; charset=utf-8", 200},
		{"/console/index.html", "text/html; charset=utf-8", 200},
		{"/console/app.css", "text/css; charset=utf-8", 200},
		{"/console/js/app.js", "text/javascript; charset=utf-8", 200},
		{"/console/favicon.svg", "image/svg+xml", 200},
		{"/console/nope.js", "", 404},
		{"/console/js/", "", 404},
	} {
		t.Run(tc.path, func(t *testing.T) {
			t.Parallel()
			rec := get(t, h, tc.path)
			if rec.Code != tc.status {
				t.Fatalf("GET %s = %d, want %d", tc.path, rec.Code, tc.status)
			}
			hd := rec.Header()
			for name, want := range map[string]string{
				"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
				"X-Frame-Options": "DENY",
			} {
				if got := hd.Get(name); got != want {
					t.Errorf("%s = %q, want %q", name, got, want)
				}
			}
			if tc.status != 200 {
				return
			}
			if got := hd.Get("Content-Type"); got != tc.ctype {
				t.Errorf("Content-Type = %q, want %q", got, tc.ctype)
			}
			etag := hd.Get("ETag")
			if hd.Get("Cache-Control") != "no-cache" || etag == "" {
				t.Errorf("Cache-Control %q, ETag %q; want no-cache and an ETag", hd.Get("Cache-Control"), etag)
			}
			if rec := get(t, h, tc.path, "If-None-Match", etag); rec.Code != http.StatusNotModified {
				t.Errorf("GET with If-None-Match = %d, want 304", rec.Code)
			}
		})
	}
	for _, directive := range []string{"default-src 'self'", "script-src 'self'", "style-src 'self'",
		"frame-ancestors 'none'", "object-src 'none'", "base-uri 'none'", "form-action 'none'"} {
		if !strings.Contains(CSP, directive) {
			t.Errorf("CSP %q lacks %q", CSP, directive)
		}
	}
	if strings.Contains(CSP, "unsafe") || strings.Contains(CSP, "http") || strings.Contains(CSP, "*") {
		t.Errorf("CSP %q allows inline code or another origin", CSP)
	}
}

// staticFiles returns every embedded file's name and text.
func staticFiles(t *testing.T) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := fs.WalkDir(static, "static", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := static.ReadFile(p)
		out[strings.TrimPrefix(p, "static/")] = string(b)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestNoTokenInURL_Issue14_6: the pages hold no inline script or style (the CSP would
// refuse them), load nothing from another origin, and keep the admin token where it cannot
// reach a URL: the sign-in form posts (never a GET query) and the one module that touches
// the token and fetch is api.js, which sends it only as the Authorization header.
func TestNoTokenInURL_Issue14_6(t *testing.T) {
	t.Parallel()
	files := staticFiles(t)
	index := files["index.html"]
	if regexp.MustCompile(`<script(?:\s[^>]*)?>\s*[^<\s]`).MatchString(index) ||
		!regexp.MustCompile(`<script type="module" src="js/app.js"></script>`).MatchString(index) {
		t.Error("index.html has an inline script, or does not load js/app.js as a module")
	}
	if strings.Contains(index, "<style") || regexp.MustCompile(`\sstyle=`).MatchString(index) {
		t.Error("index.html has inline style")
	}
	if !regexp.MustCompile(`<form id="signin-form"[^>]*method="post"`).MatchString(index) {
		t.Error("the sign-in form does not use method=post, so a submit without script would put the token in the URL")
	}
	offsite := regexp.MustCompile(`(?i)(src|href|url)\s*[=(]\s*["']?(https?:)?//`)
	for name, text := range files {
		if offsite.MatchString(text) {
			t.Errorf("%s refers to another origin", name)
		}
		if !strings.HasSuffix(name, ".js") {
			continue
		}
		if strings.Contains(text, "localStorage") || strings.Contains(text, "document.cookie") {
			t.Errorf("%s keeps state beyond sessionStorage", name)
		}
		if strings.Contains(text, "innerHTML") || strings.Contains(text, "eval(") || strings.Contains(text, "new Function") {
			t.Errorf("%s parses strings as markup or code", name)
		}
		if strings.Contains(text, ".setAttribute(\"style\"") {
			t.Errorf("%s sets a style attribute (the CSP refuses it)", name)
		}
		if name == "js/api.js" {
			continue
		}
		if strings.Contains(text, "fetch(") || strings.Contains(text, "sessionStorage") || strings.Contains(text, "XMLHttpRequest") {
			t.Errorf("%s calls the network or reads the token itself; only api.js may", name)
		}
	}
	api := files["js/api.js"]
	if !strings.Contains(api, `"Authorization": "Bearer " + (tok || token())`) ||
		!strings.Contains(api, `fetch("/admin/v1" + path, init)`) {
		t.Error("api.js does not send the token in the Authorization header of same-origin /admin/v1 calls")
	}
}
