package ingress

import (
	"encoding/json"
	"net/http"
	"net/netip"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/sluicehq/sluice/pkg/jobs"
	"github.com/sluicehq/sluice/pkg/webhook"
)

// The properties FuzzAPI checks of every answer beyond "no 5xx, a well-formed error": those
// of issue 9 items 11, 13 and 14, judged from the request as sent and the answer alone.

// apiAnswer is one answer FuzzAPI got, decoded.
type apiAnswer struct {
	status     int
	retryAfter string
	message    string // error.message
	code       string // error.code ("" in the Anthropic shape, which has none)
	param      string // error.param
}

func decodeAnswer(res *http.Response, body []byte) apiAnswer {
	a := apiAnswer{status: res.StatusCode, retryAfter: res.Header.Get("Retry-After")}
	var e apiErrorBody
	if json.Unmarshal(body, &e) == nil {
		a.message = e.Error.Message
		if e.Error.Code != nil {
			a.code = *e.Error.Code
		}
		if e.Error.Param != nil {
			a.param = *e.Error.Param
		}
	}
	return a
}

// cleanText reports whether s is text a client can mean: valid UTF-8 without control
// characters (NUL among them).
func cleanText(s string) bool {
	return utf8.ValidString(s) && !strings.ContainsFunc(s, func(r rune) bool { return r < 0x20 || r == 0x7f })
}

// cleanQuery reports whether a query string parses into valid UTF-8 without NUL.
func cleanQuery(raw string) bool {
	q, err := url.ParseQuery(raw)
	if err != nil {
		return false
	}
	for k, vs := range q {
		if !utf8.ValidString(k) || strings.ContainsRune(k, 0) {
			return false
		}
		for _, v := range vs {
			if !utf8.ValidString(v) || strings.ContainsRune(v, 0) {
				return false
			}
		}
	}
	return true
}

// checkBadInput is issue 9 item 11: a request whose Idempotency-Key or path is not clean
// text is the client's fault, told as such — never a 5xx or a 429, never with a
// Retry-After (clients would retry it forever). On a route that exists, a bad
// Idempotency-Key (on a clean path and query) is a 400 naming it, and a /v1/jobs id that is
// not clean text names no job (404 job_not_found, as the README says).
func checkBadInput(t *testing.T, req *http.Request, a apiAnswer) {
	t.Helper()
	idem := req.Header.Values("Idempotency-Key")
	badIdem := len(idem) > 1 || len(idem) == 1 && (len(idem[0]) > maxIdempotencyKey || !cleanText(idem[0]))
	badPath := !cleanText(req.URL.Path)
	if !badIdem && !badPath {
		return
	}
	// (A 3xx is net/http's redirect to the cleaned path, where this check applies again.)
	if a.status < 300 || a.status >= 500 || a.status == http.StatusTooManyRequests || a.retryAfter != "" {
		t.Fatalf("%s %q with Idempotency-Key %q = %d (Retry-After %q), want a 4xx the client cannot retry",
			req.Method, req.RequestURI, idem, a.status, a.retryAfter)
	}
	if a.status < 400 || a.code == "unknown_url" || req.Method == http.MethodHead {
		return // no such route (or no body to read)
	}
	if id, ok := strings.CutPrefix(req.URL.Path, "/v1/jobs/"); ok && badPath {
		if id, _, _ = strings.Cut(id, "/"); !cleanText(id) && (a.status != http.StatusBadRequest || a.param != "id") {
			t.Fatalf("%s %q = %d %q, want 400 naming the id for an id that is not text", req.Method, req.RequestURI,
				a.status, a.code)
		}
	}
	if badIdem && !badPath && cleanQuery(req.URL.RawQuery) && (a.status != http.StatusBadRequest || a.param != "Idempotency-Key") {
		t.Fatalf("%s %q with Idempotency-Key %q = %d param %q, want 400 naming Idempotency-Key", req.Method,
			req.URL.Path, idem, a.status, a.param)
	}
}

// The messages that name a model an answer refused (relay.go's admit).
var (
	unknownModel    = regexp.MustCompile(`^The model (".*") does not exist or you do not have access to it\.$`)
	disallowedModel = regexp.MustCompile(`^This API key may not use the model (".*")\.$`)
)

// checkModelAnswer is issue 9 item 14: a model no channel serves is 404 model_not_found,
// whatever the key's allowlist; 403 model_not_allowed is only for a model some channel
// serves. Which models are served is the router's view, which admin calls change (and
// refresh at once) as the fuzzer makes them.
func checkModelAnswer(t *testing.T, hs *harness, req *http.Request, a apiAnswer) {
	t.Helper()
	named := func(re *regexp.Regexp) (string, bool) {
		m := re.FindStringSubmatch(a.message)
		if m == nil {
			return "", false
		}
		model, err := strconv.Unquote(m[1])
		return model, err == nil
	}
	if model, ok := named(unknownModel); ok || a.code == "model_not_found" {
		switch {
		case !ok:
			t.Fatalf("model_not_found with message %q, which names no model", a.message)
		case a.status != http.StatusNotFound || (a.code != "model_not_found" && req.URL.Path != jobs.EndpointMessages):
			t.Fatalf("unknown model %q = %d %q, want 404 model_not_found", model, a.status, a.code)
		case hs.srv.router.Has(model):
			t.Fatalf("model %q answered as unknown, but a channel serves it", model)
		}
	}
	if model, ok := named(disallowedModel); ok || a.code == "model_not_allowed" {
		switch {
		case !ok:
			t.Fatalf("model_not_allowed with message %q, which names no model", a.message)
		case a.status != http.StatusForbidden:
			t.Fatalf("model %q not allowed = %d, want 403", model, a.status)
		case !hs.srv.router.Has(model):
			t.Fatalf("model %q answered 403 model_not_allowed, but no channel serves it: want 404 model_not_found", model)
		}
	}
}

// checkWebhookAccepted is issue 9 item 13 at the API: a job whose webhook URL names an
// address the SSRF guard refuses is never accepted. An answer past validation (accepted, or
// the test keys' rpm 0 429) must carry a webhook URL that webhook.CheckURL allows;
// FuzzWebhookTarget checks the guard itself. Only IP literals are judged (a name would need
// DNS, which the handler has already asked).
func checkWebhookAccepted(t *testing.T, req *http.Request, body []byte, a apiAnswer) {
	t.Helper()
	passed := a.status < 300 || a.status == http.StatusTooManyRequests && a.code == "rate_limit_exceeded"
	if req.Method != http.MethodPost || req.URL.Path != "/v1/jobs" || !passed {
		return
	}
	var sub struct {
		Webhook *struct {
			URL string `json:"url"`
		} `json:"webhook"`
	}
	if json.Unmarshal(body, &sub) != nil || sub.Webhook == nil {
		return
	}
	u, err := url.Parse(sub.Webhook.URL)
	if err != nil {
		t.Fatalf("accepted webhook URL %q, which does not parse", sub.Webhook.URL)
	}
	if _, err := netip.ParseAddr(u.Hostname()); err != nil {
		return
	}
	if err := webhook.CheckURL(t.Context(), sub.Webhook.URL, false); err != nil {
		t.Fatalf("job with webhook %q = %d, but the guard refuses it: %v", sub.Webhook.URL, a.status, err)
	}
}
