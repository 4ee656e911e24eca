package providers

import (
	"fmt"
	"net/http"

	"github.com/sluicehq/sluice/pkg/secret"
)

// Kinds of provider a channel can name.
const (
	KindOpenAI    = "openai"
	KindAzure     = "azure"
	KindAnthropic = "anthropic"
	KindGemini    = "gemini"
	KindFake      = "fake"
)

// Registry builds adapters for channels. It owns one shared HTTP client per provider family,
// so every channel of a family shares one connection pool with one set of limits.
type Registry struct {
	limits Limits
	http   map[string]*http.Client
	// nativeResponses are the hosts whose OpenAI-compatible API serves /v1/responses.
	nativeResponses []string
}

// NewRegistry returns a Registry whose clients are sized by cfg and whose calls obey limits.
func NewRegistry(cfg ClientConfig, limits Limits, opts ...RegistryOption) *Registry {
	r := &Registry{limits: limits.withDefaults(), http: map[string]*http.Client{
		KindOpenAI:    NewHTTPClient(cfg),
		KindAzure:     NewHTTPClient(cfg),
		KindAnthropic: NewHTTPClient(cfg),
		KindGemini:    NewHTTPClient(cfg),
	}}
	for _, o := range opts {
		o(r)
	}
	return r
}

// Build returns the adapter for a channel. An empty base URL means the provider's public
// API, except for azure, whose base URL names the deployment. It fails for an unknown
// provider kind or a bad base URL.
func (r *Registry) Build(kind, baseURL string, apiKey secret.Secret) (Provider, error) {
	switch kind {
	case KindOpenAI:
		if baseURL == "" {
			baseURL = "https://api.openai.com/v1"
		}
		o := NewOpenAI(r.http[KindOpenAI], baseURL, apiKey, r.limits)
		o.nativeResponses = !o.azure && r.servesResponses(baseURL)
		return o, nil
	case KindAzure:
		p, err := NewAzure(r.http[KindAzure], baseURL, apiKey, r.limits)
		if err != nil {
			return nil, err // not p: a nil *OpenAI in a Provider is not a nil Provider
		}
		return p, nil
	case KindAnthropic:
		if baseURL == "" {
			baseURL = "https://api.anthropic.com"
		}
		return NewAnthropic(r.http[KindAnthropic], baseURL, apiKey, r.limits), nil
	case KindGemini:
		if baseURL == "" {
			baseURL = geminiBaseURL
		}
		return NewGemini(r.http[KindGemini], baseURL, apiKey, r.limits), nil
	case KindFake:
		return NewFake(baseURL)
	}
	return nil, fmt.Errorf("unknown provider %q", kind)
}

// Known reports whether kind is a provider Build accepts.
func Known(kind string) bool {
	switch kind {
	case KindOpenAI, KindAzure, KindAnthropic, KindGemini, KindFake:
		return true
	}
	return false
}

// CloseIdle closes idle upstream connections (at shutdown).
func (r *Registry) CloseIdle() {
	for _, c := range r.http {
		c.CloseIdleConnections()
	}
}
