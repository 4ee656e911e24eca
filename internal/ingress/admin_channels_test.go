package ingress

import (
	"encoding/json"
	"net/http"
	"testing"
)

// TestChannelBaseURL_Issue17_2: a channel's base_url is an http(s) URL with a host and a
// valid port, or fake:// for the fake provider; anything else is a 400 naming base_url.
func TestChannelBaseURL_Issue17_2(t *testing.T) {
	t.Parallel()
	hs := newHarness(t)
	tests := []struct {
		name, provider string
		baseURL        any // nil: the member is absent
		ok             bool
	}{
		{"https", "openai", "https://api.example.com/v1", true},
		{"http with port", "openai", "http://127.0.0.1:8000/v1", true},
		{"port 65535", "openai", "http://127.0.0.1:65535", true},
		{"IPv6 host", "openai", "http://[::1]:8000/v1", true},
		{"azure query", "azure", "https://r.openai.azure.com/openai/deployments/d?api-version=2024-10-21", true},
		{"fake", "fake", "fake://?latency=20ms&token_latency=1ms", true},
		{"javascript", "openai", "javascript:alert(1)", false},
		{"file", "openai", "file:///etc/passwd", false},
		{"ftp", "openai", "ftp://example.com/v1", false},
		{"no host", "openai", "http://", false},
		{"port only", "openai", "http://:8080/v1", false},
		{"unclosed IPv6", "openai", "http://[::1", false},
		{"no scheme", "openai", "127.0.0.1:1", false},
		{"relative", "openai", "/v1", false},
		{"port 99999", "openai", "http://127.0.0.1:99999/v1", false},
		{"port 0", "openai", "http://127.0.0.1:0/v1", false},
		{"credentials", "openai", "https://user:pass@api.example.com/v1", false},
		{"fragment", "openai", "https://api.example.com/v1#x", false},
		{"fake scheme on openai", "openai", "fake://", false},
		{"http on fake", "fake", "http://127.0.0.1:8000", false},
		{"fake bad option", "fake", "fake://?latency=soon", false},
		{"empty", "openai", "", false},
		{"null", "openai", json.RawMessage("null"), false},
		{"missing", "openai", nil, false},
		{"number", "openai", 5, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			body := map[string]any{"name": "c", "provider": tt.provider, "api_key": "sk-upstream-0000", "models": []string{"x-" + tt.name}}
			if tt.baseURL != nil {
				body["base_url"] = tt.baseURL
			}
			res, b := hs.admin(http.MethodPost, "/admin/v1/channels", body)
			if tt.ok {
				if res.StatusCode != http.StatusCreated {
					t.Fatalf("base_url %v: %d %s, want 201", tt.baseURL, res.StatusCode, b)
				}
				return
			}
			wantError(t, res, b, http.StatusBadRequest, "base_url", "")
		})
	}
	// A PATCH is checked the same way.
	res, b := hs.admin(http.MethodPatch, "/admin/v1/channels/"+hs.channel, `{"provider":"openai","base_url":"http://127.0.0.1:99999"}`)
	wantError(t, res, b, http.StatusBadRequest, "base_url", "")
}

// TestChannelAPIKey_Issue17_2: a provider that cannot work without an upstream key must be
// given one (azure, anthropic, gemini, and openai at OpenAI's or Azure's hosts); an
// OpenAI-compatible server elsewhere may run keyless, and the fake provider needs none.
func TestChannelAPIKey_Issue17_2(t *testing.T) {
	t.Parallel()
	hs := newHarness(t)
	tests := []struct {
		name, provider, baseURL string
		apiKey                  any // nil: absent
		ok                      bool
	}{
		{"anthropic without", "anthropic", "https://api.anthropic.com", nil, false},
		{"anthropic empty", "anthropic", "https://api.anthropic.com", "", false},
		{"anthropic blank", "anthropic", "https://api.anthropic.com", "   ", false},
		{"anthropic null", "anthropic", "https://api.anthropic.com", json.RawMessage("null"), false},
		{"anthropic with", "anthropic", "https://api.anthropic.com", "sk-ant-0000", true},
		{"azure without", "azure", "https://r.openai.azure.com/openai/v1", nil, false},
		{"gemini without", "gemini", "https://generativelanguage.googleapis.com/v1beta", nil, false},
		{"openai's API without", "openai", "https://api.openai.com/v1", nil, false},
		{"azure host as openai without", "openai", "https://r.openai.azure.com/openai/v1", "", false},
		{"openai-compatible local server without", "openai", "http://127.0.0.1:11434/v1", nil, true},
		{"fake without", "fake", "fake://", nil, true},
		{"key with a newline", "anthropic", "https://api.anthropic.com", "sk-ant\n-0000", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			body := map[string]any{"name": "c", "provider": tt.provider, "base_url": tt.baseURL, "models": []string{"k-" + tt.name}}
			if tt.apiKey != nil {
				body["api_key"] = tt.apiKey
			}
			res, b := hs.admin(http.MethodPost, "/admin/v1/channels", body)
			if tt.ok {
				if res.StatusCode != http.StatusCreated {
					t.Fatalf("%d %s, want 201", res.StatusCode, b)
				}
				return
			}
			wantError(t, res, b, http.StatusBadRequest, "api_key", "")
		})
	}

	// PATCH: clearing the key of a channel that needs one, or moving a keyless channel to a
	// provider that needs one, is refused; other changes to it are not.
	res, b := hs.admin(http.MethodPost, "/admin/v1/channels", map[string]any{"name": "a", "provider": "anthropic",
		"base_url": "https://api.anthropic.com", "api_key": "sk-ant-1111", "models": []string{"claude-x"}})
	var ch struct{ ID string }
	if res.StatusCode != http.StatusCreated || json.Unmarshal(b, &ch) != nil {
		t.Fatalf("create: %d %s", res.StatusCode, b)
	}
	res, b = hs.admin(http.MethodPatch, "/admin/v1/channels/"+ch.ID, `{"api_key":""}`)
	wantError(t, res, b, http.StatusBadRequest, "api_key", "")
	if res, b = hs.admin(http.MethodPatch, "/admin/v1/channels/"+ch.ID, `{"enabled":false,"base_url":"https://proxy.example.com"}`); res.StatusCode != 200 {
		t.Errorf("PATCH keeping the key: %d %s", res.StatusCode, b)
	}
	res, b = hs.admin(http.MethodPatch, "/admin/v1/channels/"+hs.channel, `{"provider":"gemini","base_url":"https://g.example.com"}`)
	wantError(t, res, b, http.StatusBadRequest, "api_key", "")
}
