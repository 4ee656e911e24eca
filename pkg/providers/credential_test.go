package providers_test

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/sluicehq/sluice/pkg/providers"
	"github.com/sluicehq/sluice/pkg/secret"
)

// TestBadCredential_Issue9_3: only errors that mean the channel's own key is bad take the
// channel out of service; a content-caused 403 is about one request.
func TestBadCredential_Issue9_3(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, kind string
		status     int
		body       string
		want       bool
	}{
		{"openai invalid key", providers.KindOpenAI, 401,
			`{"error":{"message":"Incorrect API key provided","type":"invalid_request_error","code":"invalid_api_key"}}`, true},
		{"openai moderation 403", providers.KindOpenAI, 403,
			`{"error":{"message":"flagged by the content filter","type":"invalid_request_error","code":"content_policy_violation"}}`, false},
		{"openai region 403", providers.KindOpenAI, 403,
			`{"error":{"message":"Country, region, or territory not supported","type":"request_forbidden","code":"unsupported_country_region_territory"}}`, false},
		{"anthropic bad key", providers.KindAnthropic, 401,
			`{"type":"error","error":{"type":"authentication_error","message":"invalid x-api-key"}}`, true},
		{"anthropic permission on a resource", providers.KindAnthropic, 403,
			`{"type":"error","error":{"type":"permission_error","message":"not allowed to use this file"}}`, false},
		{"gemini bad key", providers.KindGemini, 400,
			`{"error":{"code":400,"message":"API key not valid. Please pass a valid API key.","status":"INVALID_ARGUMENT",` +
				`"details":[{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"API_KEY_INVALID","domain":"googleapis.com"}]}}`, true},
		{"gemini unreadable file 403", providers.KindGemini, 403,
			`{"error":{"code":403,"message":"You do not have permission to access the File","status":"PERMISSION_DENIED"}}`, false},
		{"azure invalid subscription key", providers.KindAzure, 401,
			`{"error":{"code":"401","message":"Access denied due to invalid subscription key or wrong API endpoint."}}`, true},
	}
	reg := providers.NewRegistry(providers.ClientConfig{}, providers.Limits{})
	t.Cleanup(reg.CloseIdle)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(tt.status)
				_, _ = w.Write([]byte(tt.body))
			}))
			t.Cleanup(up.Close)
			base := up.URL + "/v1"
			switch tt.kind {
			case providers.KindAzure:
				base = up.URL + "/openai/deployments/d?api-version=2024-10-21"
			case providers.KindGemini:
				base = up.URL + "/v1beta"
			}
			p, err := reg.Build(tt.kind, base, secret.Secret("sk-channel"))
			if err != nil {
				t.Fatal(err)
			}
			_, err = p.Do(t.Context(), &providers.Request{Endpoint: "/v1/chat/completions",
				Body: []byte(`{"model":"m","messages":[{"role":"user","content":"hi"}]}`)}, func(providers.Event) error { return nil })
			e, ok := errors.AsType[*providers.Error](err)
			if !ok {
				t.Fatalf("Do = %v (%T), want a *providers.Error", err, err)
			}
			if got := e.BadCredential(); got != tt.want {
				t.Errorf("BadCredential() = %v for %d %s, want %v (type %q code %q)", got, tt.status, tt.body, tt.want, e.Type, e.Code)
			}
		})
	}
}
