package providers_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/sluicehq/sluice/pkg/providers"
	"github.com/sluicehq/sluice/pkg/providers/providertest"
	"github.com/sluicehq/sluice/pkg/secret"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const testKey = secret.Secret("sk-test-conformance-key")

// checked serves next only to requests whose path starts with prefix (which it strips)
// and that carry the header pairs want; anything else gets a 401 naming what was wrong, so
// an adapter that sends the wrong URL or auth fails the suite's success cases.
func checked(next http.Handler, prefix string, want ...string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var problems []string
		if !strings.HasPrefix(r.URL.Path, prefix) {
			problems = append(problems, fmt.Sprintf("path %q lacks prefix %q", r.URL.Path, prefix))
		}
		for i := 0; i+1 < len(want); i += 2 {
			if got := r.Header.Get(want[i]); got != want[i+1] {
				problems = append(problems, fmt.Sprintf("header %s is %q", want[i], got))
			}
		}
		if len(problems) > 0 {
			http.Error(w, `{"error":{"message":"`+strings.Join(problems, "; ")+`","type":"authentication_error"}}`,
				http.StatusUnauthorized)
			return
		}
		http.StripPrefix(prefix, next).ServeHTTP(w, r)
	})
}

// maxTokensShim renames max_completion_tokens, which the adapters send to OpenAI and Azure,
// to the max_tokens the fake upstream reads, so that the fake still cuts the answer.
func maxTokensShim(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var body map[string]json.RawMessage
		if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
			http.Error(w, `{"error":{"message":"body is not a JSON object"}}`, http.StatusBadRequest)
			return
		}
		if v, ok := body["max_completion_tokens"]; ok {
			body["max_tokens"] = v
			delete(body, "max_completion_tokens")
		}
		b, _ := json.Marshal(body)
		r.Body, r.ContentLength = io.NopCloser(bytes.NewReader(b)), int64(len(b))
		next.ServeHTTP(w, r)
	})
}

// TestConformance runs the shared suite against every adapter, in each client API it
// serves, over real HTTP.
func TestConformance(t *testing.T) {
	t.Parallel()
	client := providers.NewHTTPClient(providers.ClientConfig{})
	limits := providertest.Limits()
	const azureQuery = "api-version=2024-10-21"

	openai := func(base string) providers.Provider {
		return providers.NewOpenAI(client, base+"/v1", testKey, limits)
	}
	openaiUpstream := func(u *providertest.Upstream) http.Handler {
		return checked(u, "/v1", "Authorization", "Bearer "+testKey.Reveal())
	}
	azure := func(base string) providers.Provider {
		p, err := providers.NewAzure(client, base+"/openai/deployments/dep?"+azureQuery, testKey, limits)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	azureUpstream := func(u *providertest.Upstream) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.RawQuery != azureQuery || r.Header.Get("Authorization") != "" {
				http.Error(w, `{"error":{"message":"want the api-version query and no Authorization"}}`, http.StatusUnauthorized)
				return
			}
			checked(maxTokensShim(u), "/openai/deployments/dep", "Api-Key", testKey.Reveal()).ServeHTTP(w, r)
		})
	}
	anthropic := func(base string) providers.Provider {
		return providers.NewAnthropic(client, base, testKey, limits)
	}
	anthropicUpstream := func(u *providertest.Upstream) http.Handler {
		return checked(u, "/v1", "X-Api-Key", testKey.Reveal(), "Anthropic-Version", "2023-06-01")
	}
	// An openai channel whose upstream has the Responses API: the registry is told its host.
	openaiNative := func(base string) providers.Provider {
		u, err := url.Parse(base)
		if err != nil {
			t.Fatal(err)
		}
		p, err := providers.NewRegistry(providers.ClientConfig{}, limits, providers.WithNativeResponses(u.Host)).
			Build(providers.KindOpenAI, base+"/v1", testKey)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	gemini := func(base string) providers.Provider {
		return providers.NewGemini(client, base+"/v1beta", testKey, limits)
	}
	geminiUpstream := func(u *providertest.Upstream) http.Handler {
		return checked(http.HandlerFunc(u.ServeGemini), "/v1beta", "X-Goog-Api-Key", testKey.Reveal())
	}

	tests := []struct {
		name     string
		adapter  func(base string) providers.Provider
		upstream func(u *providertest.Upstream) http.Handler
		endpoint string
	}{
		{"openai chat", openai, openaiUpstream, providertest.EndpointChat},
		{"openai messages", openai, openaiUpstream, providertest.EndpointMessages},
		{"azure chat", azure, azureUpstream, providertest.EndpointChat},
		{"azure messages", azure, azureUpstream, providertest.EndpointMessages},
		{"anthropic messages", anthropic, anthropicUpstream, providertest.EndpointMessages},
		{"anthropic chat", anthropic, anthropicUpstream, providertest.EndpointChat},
		{"gemini chat", gemini, geminiUpstream, providertest.EndpointChat},
		{"openai responses", openai, openaiUpstream, providertest.EndpointResponses},
		{"openai native responses", openaiNative, openaiUpstream, providertest.EndpointResponses},
		{"azure responses", azure, azureUpstream, providertest.EndpointResponses},
		{"anthropic responses", anthropic, anthropicUpstream, providertest.EndpointResponses},
		{"gemini responses", gemini, geminiUpstream, providertest.EndpointResponses},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			providertest.Run(t, tt.adapter, providertest.Endpoint(tt.endpoint), providertest.Handler(tt.upstream))
		})
	}
}
