//go:build browser

package e2e

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
)

type css = chromedp.CSS

// nav opens a console page from the sidebar and waits for sel to show.
func (b *browser) nav(page, sel string) {
	b.t.Helper()
	b.do("open the "+page+" page", chromedp.Click(css(fmt.Sprintf(`#nav a[data-page=%q]`, page))), chromedp.WaitVisible(css(sel)))
}

// TestBrowserConsole_Issue14_8: in headless Chromium against a real stack (ingress, worker
// with the built-in fake model, Postgres, NATS), an operator signs in to /console/ (a wrong
// token is refused with a message), creates a key (its secret shown once) and a channel (an
// API error shown in the form first), prices a model; completions and a batch run with the
// new key over HTTP; then the usage charts, the jobs browser (a job opened, the batch
// listed and its jobs shown, a filter) and the channel's health show them. Each page is
// saved under .dev/screenshots/. Any console error or uncaught exception fails the test, as
// does a failed load other than the two refusals it provokes, a request to another origin,
// a secret in a URL, or an admin call without the token in its Authorization header.
func TestBrowserConsole_Issue14_8(t *testing.T) {
	s := newStack(t, stackOpts{})
	b, stop := newBrowser(t, s.base)
	defer stop()
	// Another team's history, so the charts have past days; a key to revoke; a channel whose
	// upstream refuses its key, which the worker will disable with a reason; one whose
	// upstream fails, whose circuit will open.
	history := s.newKey(map[string]any{"name": "analytics-batch", "budget_usd": 50, "budget_period": "daily",
		"models": []string{"gpt-4o-mini", "claude-sonnet-4-5"}})
	old := s.newKey(map[string]any{"name": "old-ci"})
	seedUsage(t, s, history.ID, 13)
	_, refusing := statusUpstream(t, http.StatusUnauthorized, "")
	legacy := s.channel(map[string]any{"name": "openai-legacy", "provider": "openai", "base_url": refusing.URL + "/v1",
		"api_key": "sk-legacy-upstream-key", "models": []string{"gpt-3.5-legacy"}, "priority": 5})
	_, failing := statusUpstream(t, http.StatusServiceUnavailable, "")
	s.channel(map[string]any{"name": "openai-backup", "provider": "openai", "base_url": failing.URL + "/v1",
		"api_key": "sk-backup-upstream-key", "models": []string{"gpt-4o"}, "priority": 1, "max_concurrency": 8})

	// Sign in.
	b.do("open the console", chromedp.Navigate(s.base+"/console/"), chromedp.WaitVisible(css("#signin-form")))
	b.screenshot("01-signin")
	b.do("try a wrong token", chromedp.SendKeys(css("#signin-token"), "wrong-token-0123456789"),
		chromedp.Click(css("#signin-submit")), chromedp.WaitVisible(css("#signin-error")))
	if got := b.text("#signin-error"); !strings.Contains(got, "refused") {
		t.Errorf("sign-in error = %q, want the refusal", got)
	}
	b.do("sign in", chromedp.SendKeys(css("#signin-token"), adminToken), chromedp.Click(css("#signin-submit")),
		chromedp.WaitVisible(css("#new-key")))
	if got := eval[string](b, `sessionStorage.getItem("sluice.admin_token")`); got != adminToken {
		t.Errorf("sessionStorage holds %q, want the admin token", got)
	}
	if n := eval[int](b, `localStorage.length`); n != 0 {
		t.Errorf("localStorage holds %d items, want none", n)
	}

	// Create a key; its secret is shown once.
	b.do("open the key form", chromedp.Click(css("#new-key")), chromedp.WaitVisible(css("#key-form")))
	b.fill("#key-form", map[string]string{"name": "backend-prod", "budget_usd": "25", "budget_period": "monthly",
		"rpm": "600", "tpm": "200000"})
	b.screenshot("02-key-form")
	b.do("create the key", chromedp.Click(css(`button[form="key-form"]`)), chromedp.WaitVisible(css("#new-key-secret")))
	secret := b.text("#new-key-secret")
	if !strings.HasPrefix(secret, "sk-sl-") {
		t.Fatalf("the new key's secret reads %q", secret)
	}
	b.screenshot("03-key-created")
	b.do("close the secret", chromedp.Click(css(".modal-foot .btn-primary")), chromedp.WaitNotPresent(css(".modal")))
	b.waitJS("the key in the table", `document.querySelector("#page table")?.textContent.includes("backend-prod")`)
	// Revoke a key, after a confirmation.
	b.do("revoke old-ci", chromedp.Click(css(fmt.Sprintf(`#page tr[data-id=%q] .btn-danger`, old.ID))),
		chromedp.WaitVisible(css(".modal-foot .btn-danger")), chromedp.Click(css(".modal-foot .btn-danger")))
	b.waitJS("old-ci revoked", fmt.Sprintf(`document.querySelector(%q)?.textContent.includes("revoked")`,
		fmt.Sprintf(`#page tr[data-id=%q]`, old.ID)))

	// Create a channel: a bad base URL is refused by the API and the form says why.
	b.nav("channels", "#new-channel")
	b.do("open the channel form", chromedp.Click(css("#new-channel")), chromedp.WaitVisible(css("#channel-form")))
	b.fill("#channel-form", map[string]string{"name": "fake-primary", "provider": "fake", "base_url": "ftp://nowhere",
		"models": "gpt-4o-mini, demo-large", "rpm": "3000"})
	b.do("submit a bad channel", chromedp.Click(css(`button[form="channel-form"]`)),
		chromedp.WaitVisible(css("#channel-form .form-error")))
	if got := b.text("#channel-form .form-error"); !strings.Contains(got, "base_url") {
		t.Errorf("channel form error = %q, want the API's base_url message", got)
	}
	b.screenshot("05-channel-error")
	b.fill("#channel-form", map[string]string{"base_url": "fake://?latency=5ms"})
	b.do("create the channel", chromedp.Click(css(`button[form="channel-form"]`)), chromedp.WaitNotPresent(css(".modal")))
	b.waitJS("the channel in the table", `document.querySelector("#page table")?.textContent.includes("fake-primary")`)

	// Price a model.
	b.nav("prices", "#price-form")
	b.fill("#price-form", map[string]string{"model": "demo-large", "input": "5", "output": "15"})
	b.do("save the price", chromedp.Click(css(`#price-form button[type="submit"]`)))
	b.waitJS("the price in the table", `document.querySelector("#page table")?.textContent.includes("demo-large")`)
	b.screenshot("07-prices")

	// Traffic with the new key, over HTTP: three completions, one refused upstream, and a
	// batch of three lines.
	s.routes(s.base, secret, "demo-large")
	for i, model := range []string{"gpt-4o-mini", "gpt-4o-mini", "demo-large"} {
		res, body := s.do(http.MethodPost, "/v1/chat/completions", secret, chatBody(model, fmt.Sprintf("hello console %d", i)))
		if res.StatusCode != http.StatusOK {
			t.Fatalf("completion %d: %d %s", i, res.StatusCode, body)
		}
	}
	for _, model := range []string{"gpt-3.5-legacy", "gpt-4o"} {
		s.routes(s.base, secret, model)
		if res, body := s.do(http.MethodPost, "/v1/chat/completions", secret, chatBody(model, "hello")); res.StatusCode == http.StatusOK {
			t.Fatalf("a completion of %s on a failing channel: %d %s", model, res.StatusCode, body)
		}
	}
	c := openai.NewClient(option.WithBaseURL(s.base+"/v1"), option.WithAPIKey(secret), option.WithMaxRetries(0))
	ctx := context.Background()
	f, err := c.Files.New(ctx, openai.FileNewParams{File: openai.File(bytes.NewReader(batchInput(3, "demo-large")), "in.jsonl",
		"application/jsonl"), Purpose: openai.FilePurposeBatch})
	if err != nil {
		t.Fatal(err)
	}
	batch, err := c.Batches.New(ctx, openai.BatchNewParams{InputFileID: f.ID, Endpoint: openai.BatchNewParamsEndpointV1ChatCompletions,
		CompletionWindow: openai.BatchNewParamsCompletionWindow24h})
	if err != nil {
		t.Fatal(err)
	}
	waitBatch(t, c, batch.ID, 60*time.Second, "the batch to complete", func(b *openai.Batch) bool { return b.Status == "completed" })
	s.settled()

	// The usage charts show them, with the seeded history; filtered by the new key, only them.
	b.nav("usage", "#chart-cost-day")
	b.waitJS("a cost bar", `document.querySelectorAll("#chart-cost-day rect.bar").length > 0`)
	for _, c := range []struct {
		what, js string
		want     int
	}{
		{"requests", `Number(document.querySelector("#stat-requests").textContent)`, 6 + 2*13},
		{"cost bars by day (13 seeded days and today)", `document.querySelectorAll("#chart-cost-day rect.bar").length`, 14},
		{"token bars by day (prompt and completion)", `document.querySelectorAll("#chart-tokens-day rect.bar").length`, 28},
		{"cost bars by model", `document.querySelectorAll("#chart-cost-model rect.bar").length`, 3},
	} {
		if got := eval[int](b, c.js); got != c.want {
			t.Errorf("usage: %s = %d, want %d", c.what, got, c.want)
		}
	}
	b.screenshot("08-usage")
	b.set(`#page select[name="key"]`, keyID(t, s, "backend-prod"))
	b.waitJS("backend-prod's six requests", `document.querySelector("#stat-requests")?.textContent === "6" &&
		document.querySelectorAll("#chart-cost-model rect.bar").length === 2`)

	// The jobs browser lists them and the batch; one job opens; filters apply.
	b.nav("jobs", "#job-filters")
	b.waitJS("eight jobs", `document.querySelectorAll("#jobs-table tbody tr").length === 8`)
	b.waitJS("the batch", fmt.Sprintf(`document.querySelector("#batches-table")?.textContent.includes(%q)`, batch.ID))
	b.screenshot("09-jobs")
	b.do("open a completion", chromedp.Click(css(`#jobs-table tbody tr:last-child`)), chromedp.WaitVisible(css("#job-detail")))
	if got := b.text("#job-detail"); !strings.Contains(got, "gpt-4o-mini") || !strings.Contains(got, "succeeded") ||
		!strings.Contains(got, "backend-prod") {
		t.Errorf("job detail = %q, want the first completion, succeeded, of backend-prod", got)
	}
	b.screenshot("10-job")
	b.do("close the job", chromedp.Click(css(".modal .close")), chromedp.WaitNotPresent(css(".modal")))
	b.do("show the batch's jobs", chromedp.Click(css("#batches-table tbody tr button")))
	b.waitJS("the batch's three jobs", `document.querySelectorAll("#jobs-table tbody tr").length === 3 &&
		[...document.querySelectorAll("#jobs-table tbody tr")].every((r) => r.textContent.includes("batch line"))`)
	b.set(`#job-filters [name="status"]`, "failed") // a change of status applies at once
	b.waitJS("the batch's failed jobs: none", `document.querySelector("#jobs-table .empty") !== null`)
	b.set(`#job-filters [name="batch_id"]`, "")
	b.do("all failed jobs", chromedp.Click(css(`#job-filters button[type="submit"]`)))
	b.waitJS("the two failed jobs", `document.querySelectorAll("#jobs-table tbody tr").length === 2 &&
		document.querySelector("#jobs-table tbody").textContent.includes("gpt-3.5-legacy")`)
	b.do("open a failed job", chromedp.Click(css(`#jobs-table tbody tr:first-child`)), chromedp.WaitVisible(css("#job-detail")))
	if got := b.text(".modal"); !strings.Contains(got, "openai-backup") || !strings.Contains(got, "Error") {
		t.Errorf("failed job detail = %q, want its channel and its error", got)
	}
	b.screenshot("11-job-failed")
	b.do("close the failed job", chromedp.Click(css(".modal .close")), chromedp.WaitNotPresent(css(".modal")))

	// The channels' health counts them; the refusing channel was disabled, with the reason;
	// the failing one's circuit is not closed (open, or half-open once its pause is over).
	b.nav("channels", "#new-channel")
	b.waitJS("the channels' health", `document.querySelector("#page table")?.textContent.includes("6 jobs") &&
		document.querySelector("#page table")?.textContent.includes("upstream rejected the channel's API key") &&
		document.querySelector("#page table")?.textContent.includes("3 failures in a row")`)
	b.screenshot("06-channels")
	row := fmt.Sprintf(`#page tr[data-id=%q]`, legacy)
	b.do("enable openai-legacy again", chromedp.Click(css(row+` .actions button:nth-child(2)`)))
	b.waitJS("openai-legacy enabled", `!document.querySelector("#page table")?.textContent.includes("disabled")`)
	b.do("delete openai-legacy", chromedp.Click(css(row+` .actions button:nth-child(1)`)), chromedp.Click(css("#delete-channel")),
		chromedp.WaitVisible(css(".modal-foot .btn-danger")), chromedp.Click(css(".modal-foot .btn-danger")))
	b.waitJS("openai-legacy gone", fmt.Sprintf(`document.querySelector(%q) === null`, row))

	// The keys page shows the spend.
	b.nav("keys", "#new-key")
	b.waitJS("backend-prod's spend", `!document.querySelector("#page table")?.textContent.includes("$0.00 / $25.00")`)
	b.screenshot("04-keys")

	// Sign out: the token is gone.
	b.do("sign out", chromedp.Click(css("#signout")), chromedp.WaitVisible(css("#signin-form")))
	if got := eval[string](b, `sessionStorage.getItem("sluice.admin_token") || ""`); got != "" {
		t.Error("the token is still in sessionStorage after sign-out")
	}
	b.check([]string{"401 /admin/v1/keys", "400 /admin/v1/channels"}, adminToken, secret)
}

// seedUsage writes days of ledger rows (two models a day, priced as model_prices says) for
// keyID, one to days days ago, as if its traffic had run then.
func seedUsage(t *testing.T, s *stack, keyID string, days int) {
	t.Helper()
	_, err := s.db.Pool.Exec(context.Background(), `INSERT INTO usage_ledger
			(job_id, key_id, model, prompt_tokens, completion_tokens, cost_usd, created_at)
		SELECT 'job_seed_' || d || '_' || p.model, $1, p.model, pt, ct,
			(pt * p.input_usd_per_1m + ct * p.output_usd_per_1m) / 1e6, now() - make_interval(days => d)
		FROM generate_series(1, $2::int) AS d
		JOIN model_prices p ON p.model IN ('gpt-4o-mini', 'claude-sonnet-4-5')
		CROSS JOIN LATERAL (SELECT (CASE WHEN p.model = 'gpt-4o-mini' THEN 900 ELSE 250 END) * (20 + (d * 37) % 23) AS pt,
			(CASE WHEN p.model = 'gpt-4o-mini' THEN 300 ELSE 120 END) * (10 + (d * 53) % 17) AS ct) AS tok`, keyID, days)
	if err != nil {
		t.Fatal(err)
	}
}

// keyID is the id of the key named name.
func keyID(t *testing.T, s *stack, name string) string {
	t.Helper()
	var id string
	if err := s.db.Pool.QueryRow(context.Background(), `SELECT id FROM api_keys WHERE name = $1`, name).Scan(&id); err != nil {
		t.Fatal(err)
	}
	return id
}
