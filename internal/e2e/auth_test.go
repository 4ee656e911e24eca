package e2e

import (
	"net/http"
	"strings"
	"testing"

	"github.com/sluicehq/sluice/pkg/providers/providertest"
)

func TestRequestErrors(t *testing.T) {
	t.Parallel()
	s := newStack(t, stackOpts{maxBody: 64 << 10})
	_, srv := providertest.Start(t, providertest.Config{})
	s.channel(map[string]any{"provider": "openai", "base_url": srv.URL + "/v1", "models": []string{"gpt-4o-mini", "o3"}})
	live := s.newKey(map[string]any{"name": "live", "models": []string{"gpt-4o-mini"}})
	revoked := s.newKey(nil)
	s.admin(http.MethodDelete, "/admin/v1/keys/"+revoked.ID, nil, nil)
	expired := s.newKey(map[string]any{"name": "old", "expires_at": 1})
	spent := s.newKey(map[string]any{"name": "broke", "budget_usd": 0})
	ok := `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}`

	tests := []struct {
		name   string
		token  string
		body   string
		hdr    []string
		status int
		typ    string
		code   string
		path   string
	}{
		{"missing key", "", ok, nil, 401, "authentication_error", "invalid_api_key", ""},
		{"unknown key", "sk-sl-doesnotexist", ok, nil, 401, "authentication_error", "invalid_api_key", ""},
		{"revoked key", revoked.Key, ok, nil, 401, "authentication_error", "invalid_api_key", ""},
		{"expired key", expired.Key, ok, nil, 401, "authentication_error", "invalid_api_key", ""},
		{"admin token is not an API key", adminToken, ok, nil, 401, "authentication_error", "invalid_api_key", ""},
		{"bad JSON", live.Key, `{"model":`, nil, 400, "invalid_request_error", "", ""},
		{"not an object", live.Key, `[1,2]`, nil, 400, "invalid_request_error", "", ""},
		{"no model", live.Key, `{"messages":[{"role":"user","content":"hi"}]}`, nil, 400, "invalid_request_error", "", ""},
		{"no messages", live.Key, `{"model":"gpt-4o-mini","messages":[]}`, nil, 400, "invalid_request_error", "", ""},
		{"stream not bool", live.Key, `{"model":"gpt-4o-mini","stream":"yes","messages":[{"role":"user","content":"hi"}]}`, nil, 400, "invalid_request_error", "", ""},
		{"oversized", live.Key, `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"` + strings.Repeat("a", 70<<10) + `"}]}`, nil, 413, "invalid_request_error", "request_too_large", ""},
		{"not JSON", live.Key, ok, []string{"Content-Type", "text/plain"}, 415, "invalid_request_error", "unsupported_media_type", ""},
		{"model not allowed", live.Key, `{"model":"o3","messages":[{"role":"user","content":"hi"}]}`, nil, 403, "permission_error", "model_not_allowed", ""},
		{"unknown model", spent.Key, `{"model":"gpt-9","messages":[{"role":"user","content":"hi"}]}`, nil, 404, "not_found_error", "model_not_found", ""},
		{"budget spent", spent.Key, ok, nil, 429, "insufficient_quota", "insufficient_quota", ""},
		{"unknown route", live.Key, ok, nil, 404, "invalid_request_error", "unknown_url", "/v1/chat/complete"},
		{"embeddings without input", live.Key, `{"model":"gpt-4o-mini"}`, nil, 400, "invalid_request_error", "", "/v1/embeddings"},
		{"job of another key", live.Key, "", nil, 404, "not_found_error", "job_not_found", "/v1/jobs/job_00000000000000000000000000"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			path, method := tt.path, http.MethodPost
			if path == "" {
				path = "/v1/chat/completions"
			}
			var body any = tt.body
			if tt.body == "" {
				method, body = http.MethodGet, nil
			}
			resp, b := s.do(method, path, tt.token, body, tt.hdr...)
			if resp.StatusCode != tt.status {
				t.Fatalf("status = %d %s, want %d", resp.StatusCode, b, tt.status)
			}
			typ, code, _ := apiErr(t, b)
			if typ != tt.typ || code != tt.code {
				t.Errorf("error = %s/%s, want %s/%s (%s)", typ, code, tt.typ, tt.code, b)
			}
			if resp.Header.Get("Content-Type") != "application/json" || resp.Header.Get("X-Request-Id") == "" {
				t.Errorf("headers %v, want JSON with X-Request-Id", resp.Header)
			}
		})
	}
}

func TestModelsListsAllowedModels(t *testing.T) {
	t.Parallel()
	s := newStack(t, stackOpts{})
	_, srv := providertest.Start(t, providertest.Config{})
	s.channel(map[string]any{"provider": "openai", "base_url": srv.URL + "/v1", "models": []string{"a", "b"},
		"model_map": map[string]string{"alias": "a"}})
	k := s.newKey(map[string]any{"name": "x", "models": []string{"b", "alias"}})
	resp, b := s.do(http.MethodGet, "/v1/models", k.Key, nil)
	if resp.StatusCode != 200 || !strings.Contains(string(b), `"id":"alias"`) || !strings.Contains(string(b), `"id":"b"`) ||
		strings.Contains(string(b), `"id":"a"`) {
		t.Errorf("GET /v1/models = %d %s, want exactly alias and b", resp.StatusCode, b)
	}
}
