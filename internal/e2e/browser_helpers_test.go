//go:build browser

package e2e

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
)

// The browser tests (make test-browser, scripts/test-browser.sh) drive headless Chromium
// with chromedp against a real stack. They are behind the build tag "browser" so that
// make test needs no browser.

// browser is one headless Chromium tab and what it reported: every console message and
// exception, every failed load, and every request it sent.
type browser struct {
	t    *testing.T
	ctx  context.Context
	base string // the origin every request must go to
	dir  string // where screenshots go

	mu       sync.Mutex
	problems []string // console errors, exceptions and non-network log errors: each fails the test
	netErrs  []string // "<status> <path>" of each failed load the browser logged
	requests []sentRequest
}

type sentRequest struct {
	url  string
	auth string // the Authorization header, if any
}

// newBrowser starts Chromium with a fresh profile. It is stopped before the test's
// cleanups run (so before the stack stops), when the test function returns.
func newBrowser(t *testing.T, base string) (*browser, func()) {
	t.Helper()
	if _, err := exec.LookPath("chromium"); err != nil {
		t.Fatal("chromium is not installed: run scripts/test-browser.sh (make test-browser), which installs it")
	}
	dir := cmpOr(os.Getenv("SLUICE_SCREENSHOTS"), filepath.Join("..", "..", ".dev", "screenshots"))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	b := &browser{t: t, base: base, dir: dir}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath("chromium"),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		// Without these, connections are refused on a box with no outside network.
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("no-first-run", true),
		chromedp.Flag("lang", "en-US"),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1440, 900),
	)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelTab := chromedp.NewContext(allocCtx, chromedp.WithListener(b.listen))
	b.ctx = ctx
	// The first Do starts the browser and binds its life to the context it is given, so
	// that context has no deadline; the allocator's start-up has its own.
	if err := chromedp.Do(ctx, chromedp.EmulateViewport(1440, 900)); err != nil {
		cancelTab()
		cancelAlloc()
		t.Fatalf("start chromium: %v", err)
	}
	return b, func() {
		cancelTab()
		cancelAlloc() // waits for the browser process to exit
	}
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// listen runs in the tab's event loop: it only records.
func (b *browser) listen(ev any) {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch ev := ev.(type) {
	case *runtime.EventConsoleAPICalled:
		if ev.Type == runtime.ConsoleAPICalledTypeError || ev.Type == runtime.ConsoleAPICalledTypeAssert {
			var args []string
			for _, a := range ev.Args {
				args = append(args, string(a.Value)+a.Description)
			}
			b.problems = append(b.problems, "console."+string(ev.Type)+": "+strings.Join(args, " "))
		}
	case *runtime.EventExceptionThrown:
		d := ev.ExceptionDetails
		text := d.Text
		if d.Exception != nil {
			text += " " + d.Exception.Description
		}
		b.problems = append(b.problems, fmt.Sprintf("uncaught exception at %s:%d: %s", d.URL, d.LineNumber+1, text))
	case *log.EventEntryAdded:
		e := ev.Entry
		if e.Level != log.EntryLevelError {
			return
		}
		if e.Source == log.EntrySourceNetwork {
			path := e.URL
			if u, err := url.Parse(e.URL); err == nil {
				path = u.Path
			}
			status := "?"
			if _, after, ok := strings.Cut(e.Text, "status of "); ok {
				status, _, _ = strings.Cut(after, " ")
			}
			b.netErrs = append(b.netErrs, status+" "+path)
			return
		}
		b.problems = append(b.problems, fmt.Sprintf("browser log (%s): %s %s", e.Source, e.Text, e.URL))
	case *network.EventRequestWillBeSent:
		r := sentRequest{url: ev.Request.URL}
		if v, ok := ev.Request.Headers["Authorization"].(string); ok {
			r.auth = v
		}
		b.requests = append(b.requests, r)
	}
}

// do runs actions, failing the test (with a screenshot) if they do not finish within 30s.
func (b *browser) do(what string, actions ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		b.screenshot("failed")
		b.t.Fatalf("%s: %v (problems so far: %v)", what, err, b.problemList())
	}
}

// eval evaluates a JavaScript expression in the page.
func eval[T any](b *browser, expr string) T {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		b.t.Fatalf("evaluate %s: %v", expr, err)
	}
	return v
}

// waitJS polls a JavaScript condition until it is true (30s at most).
func (b *browser) waitJS(what, cond string) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
	defer cancel()
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](cond, chromedp.WithPollingInterval(50*time.Millisecond))); err != nil {
		b.screenshot("failed")
		b.t.Fatalf("waiting for %s (%s): %v", what, cond, err)
	}
}

// text returns the text of the first element css selects.
func (b *browser) text(css string) string {
	b.t.Helper()
	return eval[string](b, fmt.Sprintf(`(document.querySelector(%q) || {}).textContent || ""`, css))
}

// fill sets the value of the named fields of the form css selects.
func (b *browser) fill(form string, values map[string]string) {
	b.t.Helper()
	for name, v := range values {
		b.do("fill "+name, chromedp.SetValue(chromedp.CSS(fmt.Sprintf("%s [name=%q]", form, name)), v))
	}
}

// set sets the value of the control css selects and fires its change event, as a person
// choosing an option would.
func (b *browser) set(css, value string) {
	b.t.Helper()
	if !eval[bool](b, fmt.Sprintf(`(() => { const el = document.querySelector(%q); if (!el) return false;
		el.value = %q; el.dispatchEvent(new Event("change", {bubbles: true})); return true })()`, css, value)) {
		b.t.Fatalf("no %s to set", css)
	}
}

// screenshot saves the viewport as name.png in the screenshots folder (.dev/screenshots).
func (b *browser) screenshot(name string) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
	defer cancel()
	// The page settles (fonts, a chart's last bar) before the picture.
	_, _ = chromedp.Run(ctx, chromedp.Evaluate[bool](`new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(() => r(true))))`,
		chromedp.EvalAwaitPromise))
	png, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
	if err != nil {
		b.t.Errorf("screenshot %s: %v", name, err)
		return
	}
	path := filepath.Join(b.dir, name+".png")
	if err := os.WriteFile(path, png, 0o644); err != nil {
		b.t.Errorf("save %s: %v", path, err)
	}
}

func (b *browser) problemList() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.problems...)
}

// check fails the test for any console error or uncaught exception, any failed load not in
// expectedNet ("<status> <path>", in order), any request to another origin, any secret in
// a URL, and any admin call without the admin token in its Authorization header.
func (b *browser) check(expectedNet []string, secrets ...string) {
	b.t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, p := range b.problems {
		b.t.Errorf("browser: %s", p)
	}
	if strings.Join(b.netErrs, ", ") != strings.Join(expectedNet, ", ") {
		b.t.Errorf("failed loads %q, want %q", b.netErrs, expectedNet)
	}
	admin := 0
	for _, r := range b.requests {
		if !strings.HasPrefix(r.url, b.base+"/") && !strings.HasPrefix(r.url, "data:") {
			b.t.Errorf("request to another origin: %s", r.url)
		}
		for _, s := range secrets {
			if strings.Contains(r.url, s) || strings.Contains(r.url, url.QueryEscape(s)) {
				b.t.Errorf("a secret in the URL of a request: %s", r.url)
			}
		}
		if strings.HasPrefix(r.url, b.base+"/admin/v1/") {
			admin++
			if r.auth != "Bearer "+adminToken && r.auth != "Bearer wrong-token-0123456789" {
				b.t.Errorf("admin call %s sent Authorization %q", r.url, r.auth)
			}
		}
	}
	if admin == 0 {
		b.t.Error("the browser made no admin API call")
	}
}
