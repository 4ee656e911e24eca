package ingress

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
)

// TestAdminPathIDNotText_Issue17_1 (and issue 9 item 11): a path id that is not valid text
// names nothing: 404, never a 500 from Postgres or a 503 with Retry-After.
func TestAdminPathIDNotText_Issue17_1(t *testing.T) {
	t.Parallel()
	hs := newHarness(t)
	tests := []struct {
		method, target, token, code string
	}{
		{http.MethodGet, "/admin/v1/keys/%ff", testAdminToken, "key_not_found"},
		{http.MethodPatch, "/admin/v1/keys/%ff", testAdminToken, "key_not_found"},
		{http.MethodDelete, "/admin/v1/keys/%ff", testAdminToken, "key_not_found"},
		{http.MethodGet, "/admin/v1/channels/%ff%fe", testAdminToken, "channel_not_found"},
		{http.MethodPatch, "/admin/v1/channels/%ff%fe", testAdminToken, "channel_not_found"},
		{http.MethodDelete, "/admin/v1/channels/%00", testAdminToken, "channel_not_found"},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.target, func(t *testing.T) {
			t.Parallel()
			res, b := hs.do(tt.method, tt.target, `{}`, "Authorization", "Bearer "+tt.token)
			wantError(t, res, b, http.StatusNotFound, "", tt.code)
			if res.Header.Get("Retry-After") != "" {
				t.Errorf("Retry-After on a 404: %v", res.Header)
			}
		})
	}
}

// TestQueryNotText_Issue17_1: invalid UTF-8 or NUL in a query value is a 400 naming it.
func TestQueryNotText_Issue17_1(t *testing.T) {
	t.Parallel()
	hs := newHarness(t)
	tests := []struct{ target, token, param string }{
		{"/admin/v1/usage?key_id=%ff", testAdminToken, "key_id"},
		{"/admin/v1/usage?key_id=%00", testAdminToken, "key_id"},
		{"/admin/v1/usage?from=99999999999999", testAdminToken, "from"},
		{"/admin/v1/usage?to=-99999999999999", testAdminToken, "to"},
		{"/v1/jobs?after=job_%ff", testKey, "after"},
		{"/v1/jobs/job_x?wait=%00", testKey, "wait"},
	}
	for _, tt := range tests {
		t.Run(tt.target, func(t *testing.T) {
			t.Parallel()
			res, b := hs.do(http.MethodGet, tt.target, nil, "Authorization", "Bearer "+tt.token)
			wantError(t, res, b, http.StatusBadRequest, tt.param, "")
		})
	}
	// A query string that does not parse at all.
	res, b := hs.admin(http.MethodGet, "/admin/v1/usage?key_id=%zz", nil)
	wantError(t, res, b, http.StatusBadRequest, "", "")
}

// TestJobPathIDNotText_Issue9_11: on /v1 a path id that is not valid text is a malformed
// request, a 400 naming it, never a 503 with Retry-After that a client would retry forever
// (the admin routes answer 404: TestAdminPathIDNotText_Issue17_1).
func TestJobPathIDNotText_Issue9_11(t *testing.T) {
	t.Parallel()
	hs := newHarness(t)
	for _, tt := range []struct{ method, target string }{
		{http.MethodGet, "/v1/jobs/%FF"},
		{http.MethodGet, "/v1/jobs/job_%00"},
		{http.MethodGet, "/v1/jobs/%FF?wait=1s"},
		{http.MethodPost, "/v1/jobs/%FF/cancel"},
	} {
		res, b := hs.do(tt.method, tt.target, nil, "Authorization", "Bearer "+testKey)
		wantError(t, res, b, http.StatusBadRequest, "id", "")
		if res.Header.Get("Retry-After") != "" {
			t.Errorf("%s %s: Retry-After on a 400", tt.method, tt.target)
		}
	}
}

// TestIdempotencyKeyNotText_Issue9_11: an Idempotency-Key that is not valid text is a 400,
// not a 503 with Retry-After (which clients retry forever).
func TestIdempotencyKeyNotText_Issue9_11(t *testing.T) {
	t.Parallel()
	hs := newHarness(t)
	body := `{"endpoint":"/v1/chat/completions","body":{"model":"m","messages":[{"role":"user","content":"hi"}]}}`
	for _, idem := range []string{"\xff", "a\x00b", "a\nb", strings.Repeat("k", 256)} {
		res, b := hs.do(http.MethodPost, "/v1/jobs", body, "Authorization", "Bearer "+testKey, "Idempotency-Key", idem)
		wantError(t, res, b, http.StatusBadRequest, "Idempotency-Key", "")
		if res.Header.Get("Retry-After") != "" {
			t.Errorf("Idempotency-Key %q: Retry-After on a 400", idem)
		}
	}
	res, b := hs.do(http.MethodPost, "/v1/jobs", body, "Authorization", "Bearer "+testKey,
		"Idempotency-Key", "one", "Idempotency-Key", "two")
	wantError(t, res, b, http.StatusBadRequest, "Idempotency-Key", "")
	// A good one still makes a job, and the same job the second time.
	res, b = hs.do(http.MethodPost, "/v1/jobs", body, "Authorization", "Bearer "+testKey, "Idempotency-Key", "ключ-1")
	if res.StatusCode != http.StatusAccepted {
		t.Fatalf("good Idempotency-Key: %d %s", res.StatusCode, b)
	}
	if res, b = hs.do(http.MethodPost, "/v1/jobs", body, "Authorization", "Bearer "+testKey, "Idempotency-Key", "ключ-1"); res.StatusCode != http.StatusOK {
		t.Fatalf("repeated Idempotency-Key: %d %s", res.StatusCode, b)
	}
}

// TestAdminNULInJSON_Issue17_1: \u0000 in any string of an admin body is a 400 naming the
// member, before Postgres sees it.
func TestAdminNULInJSON_Issue17_1(t *testing.T) {
	t.Parallel()
	hs := newHarness(t)
	channel := func(field string) string {
		m := map[string]string{
			"name": `"c"`, "provider": `"fake"`, "base_url": `"fake://"`, "models": `["m"]`, "model_map": `{"a":"m"}`,
		}
		m[field] = map[string]string{"name": `"c\u0000"`, "models": `["m","x\u0000y"]`, "model_map": `{"a\u0000":"m"}`,
			"base_url": `"fake://\u0000"`}[field]
		var parts []string
		for k, v := range m {
			parts = append(parts, fmt.Sprintf("%q:%s", k, v))
		}
		return "{" + strings.Join(parts, ",") + "}"
	}
	tests := []struct {
		name, method, target, body, param string
	}{
		{"key name", http.MethodPost, "/admin/v1/keys", `{"name":"a\u0000b"}`, "name"},
		{"key models", http.MethodPost, "/admin/v1/keys", `{"name":"k","models":["m","\u0000"]}`, "models"},
		{"key patch name", http.MethodPatch, "/admin/v1/keys/" + hs.key.ID, `{"name":"\u0000"}`, "name"},
		{"channel name", http.MethodPost, "/admin/v1/channels", channel("name"), "name"},
		{"channel models", http.MethodPost, "/admin/v1/channels", channel("models"), "models"},
		{"channel model_map key", http.MethodPost, "/admin/v1/channels", channel("model_map"), "model_map"},
		{"channel base_url", http.MethodPost, "/admin/v1/channels", channel("base_url"), "base_url"},
		{"channel patch models", http.MethodPatch, "/admin/v1/channels/" + hs.channel, `{"models":["\u0000"]}`, "models"},
		{"price model", http.MethodPut, "/admin/v1/prices/m", `{"model":"m\u0000","input_usd_per_1m":1,"output_usd_per_1m":1}`, "model"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			res, b := hs.admin(tt.method, tt.target, tt.body)
			wantError(t, res, b, http.StatusBadRequest, tt.param, "")
		})
	}
}

// TestAdminNumberRange_Issue17_1: a number its column cannot hold is a 400 naming the field.
func TestAdminNumberRange_Issue17_1(t *testing.T) {
	t.Parallel()
	hs := newHarness(t)
	tests := []struct {
		method, target, body, param string
	}{
		{http.MethodPost, "/admin/v1/keys", `{"budget_usd": 1e30}`, "budget_usd"},
		{http.MethodPost, "/admin/v1/keys", `{"budget_usd": -1}`, "budget_usd"},
		{http.MethodPost, "/admin/v1/keys", `{"budget_usd": 1e400}`, "budget_usd"},
		{http.MethodPost, "/admin/v1/keys", `{"rpm": 3000000000}`, "rpm"},
		{http.MethodPost, "/admin/v1/keys", `{"rpm": 0}`, "rpm"},
		{http.MethodPost, "/admin/v1/keys", `{"rpm": 1.5}`, "rpm"},
		{http.MethodPost, "/admin/v1/keys", `{"max_concurrency": 1e30}`, "max_concurrency"},
		{http.MethodPost, "/admin/v1/keys", `{"expires_at": 1e15}`, "expires_at"},
		{http.MethodPatch, "/admin/v1/keys/" + hs.key.ID, `{"budget_usd": 1e30}`, "budget_usd"},
		{http.MethodPatch, "/admin/v1/channels/" + hs.channel, `{"priority": 1e10}`, "priority"},
		{http.MethodPatch, "/admin/v1/channels/" + hs.channel, `{"weight": 0}`, "weight"},
		{http.MethodPut, "/admin/v1/prices/m", `{"input_usd_per_1m": 1e30, "output_usd_per_1m": 1}`, "input_usd_per_1m"},
		{http.MethodPut, "/admin/v1/prices/m", `{"input_usd_per_1m": 1, "output_usd_per_1m": -1}`, "output_usd_per_1m"},
	}
	for _, tt := range tests {
		t.Run(tt.param+" "+tt.body, func(t *testing.T) {
			t.Parallel()
			res, b := hs.admin(tt.method, tt.target, tt.body)
			wantError(t, res, b, http.StatusBadRequest, tt.param, "")
		})
	}
	// In range is fine.
	res, b := hs.admin(http.MethodPost, "/admin/v1/keys", `{"name":"big","budget_usd":1e9,"rpm":2147483647,"expires_at":253402300799}`)
	if res.StatusCode != http.StatusCreated {
		t.Fatalf("largest values: %d %s", res.StatusCode, b)
	}
}

// TestAdminStrictBody_Issue17_3: an admin body is a JSON object of the documented members,
// in valid UTF-8; null only where a field may be null. A null body creates no key.
func TestAdminStrictBody_Issue17_3(t *testing.T) {
	t.Parallel()
	hs := newHarness(t)
	count := func() int {
		_, b := hs.admin(http.MethodGet, "/admin/v1/keys", nil)
		var l struct{ Data []any }
		if err := json.Unmarshal(b, &l); err != nil {
			t.Fatal(err)
		}
		return len(l.Data)
	}
	before := count()
	tests := []struct {
		name, method, target, body, param string
	}{
		{"null body", http.MethodPost, "/admin/v1/keys", `null`, ""},
		{"empty body", http.MethodPost, "/admin/v1/keys", ``, ""},
		{"array body", http.MethodPost, "/admin/v1/keys", `[{"name":"k"}]`, ""},
		{"string body", http.MethodPost, "/admin/v1/keys", `"k"`, ""},
		{"invalid UTF-8 in a string", http.MethodPost, "/admin/v1/keys", "{\"name\":\"\xff\"}", ""},
		{"invalid UTF-8 in a key", http.MethodPost, "/admin/v1/keys", "{\"\xc3(\":1}", ""},
		{"unknown member", http.MethodPost, "/admin/v1/keys", `{"name":"k","budget":5}`, "budget"},
		{"case variant", http.MethodPost, "/admin/v1/keys", `{"Name":"k"}`, "Name"},
		{"repeated member", http.MethodPost, "/admin/v1/keys", `{"name":"a","name":"b"}`, "name"},
		{"null name", http.MethodPost, "/admin/v1/keys", `{"name":null}`, "name"},
		{"null inside models", http.MethodPost, "/admin/v1/keys", `{"name":"k","models":[null]}`, "models"},
		{"empty model name", http.MethodPost, "/admin/v1/keys", `{"name":"k","models":[""]}`, "models[0]"},
		{"wrong type", http.MethodPost, "/admin/v1/keys", `{"name":5}`, "name"},
		{"trailing data", http.MethodPost, "/admin/v1/keys", `{"name":"k"} {}`, ""},
		{"channel null base_url", http.MethodPatch, "/admin/v1/channels/" + hs.channel, `{"base_url":null}`, "base_url"},
		{"channel null model_map value", http.MethodPatch, "/admin/v1/channels/" + hs.channel, `{"model_map":{"a":null}}`, "model_map"},
		{"price body null", http.MethodPut, "/admin/v1/prices/m", `null`, ""},
		{"price missing", http.MethodPut, "/admin/v1/prices/m", `{"input_usd_per_1m":1}`, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, b := hs.admin(tt.method, tt.target, tt.body)
			wantError(t, res, b, http.StatusBadRequest, tt.param, "")
		})
	}
	if n := count(); n != before {
		t.Errorf("keys: %d before, %d after refused bodies", before, n)
	}
	// null still clears a nullable limit.
	if res, b := hs.admin(http.MethodPatch, "/admin/v1/keys/"+hs.key.ID, `{"budget_usd":null,"models":null}`); res.StatusCode != 200 {
		t.Errorf("null for nullable fields: %d %s", res.StatusCode, b)
	}
}

// TestAmbiguousCredentials_Issue17_3: two Authorization headers, or an x-api-key that
// disagrees with Authorization, are refused with a 400 on /v1 and /admin. The admin token
// is taken only from Authorization.
func TestAmbiguousCredentials_Issue17_3(t *testing.T) {
	t.Parallel()
	hs := newHarness(t)
	tests := []struct {
		name, target string
		hdr          []string
		status       int
	}{
		{"v1 two Authorization", "/v1/models", []string{"Authorization", "Bearer " + testKey, "Authorization", "Bearer sk-sl-other"}, 400},
		{"v1 the same twice", "/v1/models", []string{"Authorization", "Bearer " + testKey, "Authorization", "Bearer " + testKey}, 400},
		{"v1 conflicting x-api-key", "/v1/models", []string{"Authorization", "Bearer " + testKey, "X-Api-Key", "sk-sl-other"}, 400},
		{"v1 two x-api-key", "/v1/models", []string{"X-Api-Key", testKey, "X-Api-Key", testKey}, 400},
		{"v1 Basic plus x-api-key", "/v1/models", []string{"Authorization", "Basic eDp5", "X-Api-Key", testKey}, 400},
		{"v1 agreeing x-api-key", "/v1/models", []string{"Authorization", "Bearer " + testKey, "X-Api-Key", testKey}, 200},
		{"v1 x-api-key alone", "/v1/models", []string{"X-Api-Key", testKey}, 200},
		{"admin two Authorization", "/admin/v1/keys", []string{"Authorization", "Bearer " + testAdminToken, "Authorization", "Bearer x"}, 400},
		{"admin conflicting x-api-key", "/admin/v1/keys", []string{"Authorization", "Bearer " + testAdminToken, "X-Api-Key", testKey}, 400},
		{"admin token in x-api-key", "/admin/v1/keys", []string{"X-Api-Key", testAdminToken}, 401},
		{"admin token in both", "/admin/v1/keys", []string{"Authorization", "Bearer " + testAdminToken, "X-Api-Key", testAdminToken}, 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			res, b := hs.do(http.MethodGet, tt.target, nil, tt.hdr...)
			if tt.status != 200 {
				code := "ambiguous_credentials"
				if tt.status == 401 {
					code = "invalid_admin_token"
				}
				wantError(t, res, b, tt.status, "", code)
			} else if res.StatusCode != 200 {
				t.Errorf("%d %s, want 200", res.StatusCode, b)
			}
		})
	}
}

// TestUnknownModelIs404_Issue9_14: a model no channel serves is 404 model_not_found, even
// for a key with an allowlist; a served model the key may not use stays 403.
func TestUnknownModelIs404_Issue9_14(t *testing.T) {
	t.Parallel()
	hs := newHarness(t)
	chat := func(model string) string {
		return `{"model":"` + model + `","messages":[{"role":"user","content":"hi"}]}`
	}
	tests := []struct {
		name, path, body string
		status           int
		code             string
	}{
		{"unknown model", "/v1/chat/completions", chat("no-such-model"), 404, "model_not_found"},
		{"unknown model async", "/v1/jobs", `{"endpoint":"/v1/chat/completions","body":` + chat("no-such-model") + `}`, 404, "model_not_found"},
		{"served but not allowed", "/v1/chat/completions", chat("m-other"), 403, "model_not_allowed"},
		{"allowed (then its rpm of 0)", "/v1/chat/completions", chat("m"), 429, "rate_limit_exceeded"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			res, b := hs.do(http.MethodPost, tt.path, tt.body, "Authorization", "Bearer "+testAllowKey)
			wantError(t, res, b, tt.status, "", tt.code)
		})
	}
}

// TestJobFields_Issue17_4: a webhook URL that could never be delivered to and metadata that
// is not string pairs are refused at submit; metadata null is taken as absent (as OpenAI
// takes it).
func TestJobFields_Issue17_4(t *testing.T) {
	t.Parallel()
	hs := newHarness(t)
	submit := func(extra string) string {
		return `{"endpoint":"/v1/chat/completions","body":{"model":"m","messages":[{"role":"user","content":"hi"}]}` + extra + `}`
	}
	many := make([]string, 17)
	for i := range many {
		many[i] = fmt.Sprintf(`"k%d":"v"`, i)
	}
	tests := []struct {
		name, body, param string
	}{
		{"webhook port 99999", submit(`,"webhook":{"url":"http://127.0.0.1:99999/"}`), "webhook.url"},
		{"webhook port 99999 on a public address", submit(`,"webhook":{"url":"http://93.184.216.34:99999/"}`), "webhook.url"},
		{"webhook port 0", submit(`,"webhook":{"url":"https://93.184.216.34:0/hook"}`), "webhook.url"},
		{"webhook port not a number", submit(`,"webhook":{"url":"http://93.184.216.34:8o/"}`), "webhook.url"},
		{"webhook unclosed IPv6", submit(`,"webhook":{"url":"http://[::1/"}`), "webhook.url"},
		{"webhook no host", submit(`,"webhook":{"url":"http://"}`), "webhook.url"},
		{"metadata number", submit(`,"metadata":{"a":1}`), "metadata"},
		{"metadata null value", submit(`,"metadata":{"a":null}`), "metadata"},
		{"metadata nested", submit(`,"metadata":{"a":{"b":"c"}}`), "metadata"},
		{"metadata array", submit(`,"metadata":["a"]`), "metadata"},
		{"metadata string", submit(`,"metadata":"a"`), "metadata"},
		{"metadata 17 pairs", submit(`,"metadata":{` + strings.Join(many, ",") + `}`), "metadata"},
		{"metadata long key", submit(`,"metadata":{"` + strings.Repeat("k", 65) + `":"v"}`), "metadata"},
		{"metadata NUL", submit(`,"metadata":{"a":"\u0000"}`), "metadata"},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			res, b := hs.do(http.MethodPost, "/v1/jobs", tt.body, "Authorization", "Bearer "+testKey,
				"Idempotency-Key", fmt.Sprint("bad-", i))
			wantError(t, res, b, http.StatusBadRequest, tt.param, "")
		})
	}
	for i, extra := range []string{`,"metadata":null`, `,"metadata":{}`, `,"metadata":{"customer":"42"}`} {
		res, b := hs.do(http.MethodPost, "/v1/jobs", submit(extra), "Authorization", "Bearer "+testKey,
			"Idempotency-Key", fmt.Sprint("good-", i))
		var o struct{ Metadata map[string]string }
		if res.StatusCode != http.StatusAccepted || json.Unmarshal(b, &o) != nil || o.Metadata == nil {
			t.Errorf("%s: %d %s, want 202 with a metadata object", extra, res.StatusCode, b)
		}
	}
}
