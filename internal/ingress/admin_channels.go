package ingress

import (
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/sluicehq/sluice/pkg/providers"
	"github.com/sluicehq/sluice/pkg/route"
	"github.com/sluicehq/sluice/pkg/secret"
	"github.com/sluicehq/sluice/pkg/store"
)

// channelFields is the JSON of a channel; absent fields keep their value on PATCH. Only
// max_concurrency may be null (no cap). priority and weight are integer columns.
type channelFields struct {
	Name     *string            `json:"name"`
	Provider *string            `json:"provider"`
	BaseURL  *string            `json:"base_url"`
	APIKey   *string            `json:"api_key"`
	Models   *[]string          `json:"models"`
	ModelMap *map[string]string `json:"model_map"`
	Priority *int               `json:"priority" range:"-2147483648,2147483647"`
	Weight   *int               `json:"weight" range:"1,2147483647"`
	Enabled  *bool              `json:"enabled"`
	// MaxConcurrency caps the channel's upstream calls in flight per worker process.
	MaxConcurrency nullable[int] `json:"max_concurrency" range:"1,1000000"`
	// RPM and TPM are the upstream account's quotas, paced across every worker.
	RPM nullable[int] `json:"rpm" range:"1,2147483647"`
	TPM nullable[int] `json:"tpm" range:"1,2147483647"`
}

// apply sets p's fields from f and checks the result. hasKey says whether the channel
// already holds an upstream key (on PATCH). The base URL and the key are checked when the
// channel is created and whenever a PATCH changes them or the provider, so a channel
// stored before these checks existed can still be disabled or renamed.
func (f *channelFields) apply(p *store.ChannelParams, creating, hasKey bool) error {
	set := func(dst *string, v *string) {
		if v != nil {
			*dst = *v
		}
	}
	set(&p.Name, f.Name)
	set(&p.Provider, f.Provider)
	set(&p.BaseURL, f.BaseURL)
	if f.APIKey != nil {
		k := secret.Secret(strings.TrimSpace(*f.APIKey))
		p.APIKey = &k
		hasKey = k != ""
	}
	if f.Models != nil {
		p.Models = *f.Models
	}
	if f.ModelMap != nil {
		p.ModelMap = *f.ModelMap
	}
	if f.Priority != nil {
		p.Priority = *f.Priority
	}
	if f.Weight != nil {
		p.Weight = *f.Weight
	}
	if f.Enabled != nil {
		p.Enabled = *f.Enabled
	}
	if f.MaxConcurrency.Set {
		p.MaxConcurrency = f.MaxConcurrency.Value
	}
	if f.RPM.Set {
		p.RPM = f.RPM.Value
	}
	if f.TPM.Set {
		p.TPM = f.TPM.Value
	}
	switch {
	case strings.TrimSpace(p.Name) == "":
		return badRequest("name", "'name' is required.")
	case !providers.Known(p.Provider):
		return badRequest("provider", fmt.Sprintf("Unknown provider %q.", p.Provider))
	case len(p.Models) == 0 && len(p.ModelMap) == 0:
		return badRequest("models", "'models' must list at least one model.")
	}
	if err := checkModelNames("models", p.Models); err != nil {
		return err
	}
	for alias, upstream := range p.ModelMap {
		if err := checkModelNames("model_map", []string{alias, upstream}); err != nil {
			return badRequest("model_map", "'model_map' maps non-empty model names, without control characters.")
		}
	}
	if p.APIKey != nil && hasControl(p.APIKey.Reveal()) {
		return badRequest("api_key", "'api_key' must not contain control characters.")
	}
	if creating || f.BaseURL != nil || f.Provider != nil || f.APIKey != nil {
		if err := checkBaseURL(p.Provider, p.BaseURL); err != nil {
			return err
		}
		if !hasKey && needsKey(p.Provider, p.BaseURL) {
			return badRequest("api_key", fmt.Sprintf("'api_key' is required for a %s channel at %s.", p.Provider, p.BaseURL))
		}
	}
	return nil
}

// checkBaseURL accepts an absolute http or https URL with a host and, if it names one, a
// port in 1..65535 — or, for the fake provider only, a fake:// URL the fake model can read.
// Credentials do not belong in it: the base URL is stored and shown in the clear, the
// api_key sealed.
func checkBaseURL(provider, raw string) error {
	bad := func(why string) error {
		return badRequest("base_url", "'base_url' "+why+".")
	}
	if raw == "" {
		return bad("is required: the URL the provider's official SDK takes, like https://api.openai.com/v1")
	}
	u, err := url.Parse(raw)
	if err != nil {
		return bad("is not a valid URL")
	}
	if provider == providers.KindFake {
		if u.Scheme != "fake" {
			return bad("must be a fake:// URL for the fake provider, like fake://?latency=20ms")
		}
		if _, err := providers.NewFake(raw); err != nil {
			return bad("has a bad fake option (latency and token_latency are durations, like 20ms)")
		}
		return nil
	}
	switch {
	case u.Scheme != "http" && u.Scheme != "https":
		return bad("must be an http or https URL")
	case u.Opaque != "" || u.Hostname() == "":
		return bad("must be an absolute URL with a host, like https://api.openai.com/v1")
	case u.User != nil:
		return bad("must not carry credentials; put the upstream key in 'api_key'")
	case u.Fragment != "" || strings.HasSuffix(raw, "#"):
		return bad("must not have a fragment")
	}
	if port := u.Port(); port != "" {
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return bad("has an invalid port (want 1 to 65535)")
		}
	}
	return nil
}

// needsKey reports whether a channel of provider at baseURL cannot work without an upstream
// key. Azure, Anthropic and Gemini always need one, as does OpenAI's own API (and an Azure
// host under the openai provider). Other OpenAI-compatible servers (vLLM, Ollama, llama.cpp,
// LM Studio) often run without a key, so an openai channel elsewhere may have none.
func needsKey(provider, baseURL string) bool {
	switch provider {
	case providers.KindAzure, providers.KindAnthropic, providers.KindGemini:
		return true
	case providers.KindOpenAI:
		u, err := url.Parse(baseURL)
		if err != nil {
			return true
		}
		host := strings.ToLower(u.Hostname())
		return host == "api.openai.com" || strings.HasSuffix(host, ".openai.azure.com") ||
			strings.HasSuffix(host, ".cognitiveservices.azure.com")
	}
	return false
}

func (s *Server) createChannel(w http.ResponseWriter, r *http.Request) {
	var f channelFields
	if !s.decodeAdmin(w, r, &f) {
		return
	}
	p := store.ChannelParams{Weight: 1, Enabled: true}
	if err := f.apply(&p, true, false); err != nil {
		s.writeError(w, r, err)
		return
	}
	ch, err := s.store.CreateChannel(r.Context(), p)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	s.channelsChanged(r)
	writeJSON(w, http.StatusCreated, channelObject(&ch))
}

func channelObject(ch *store.Channel) map[string]any {
	return map[string]any{"id": ch.ID, "object": "channel", "name": ch.Name, "provider": ch.Provider,
		"base_url": ch.BaseURL, "api_key": ch.APIKeyHint, "models": ch.Models, "model_map": ch.ModelMap,
		"priority": ch.Priority, "weight": ch.Weight, "enabled": ch.Enabled, "disabled_reason": ch.DisabledReason,
		"max_concurrency": ch.MaxConcurrency, "rpm": ch.RPM, "tpm": ch.TPM, "created_at": ch.CreatedAt.Unix(), "updated_at": ch.UpdatedAt.Unix()}
}

func (s *Server) listChannels(w http.ResponseWriter, r *http.Request) {
	chs, err := s.store.Channels(r.Context())
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	data := make([]any, 0, len(chs))
	for i := range chs {
		data = append(data, channelObject(&chs[i]))
	}
	writeJSON(w, http.StatusOK, map[string]any{"object": "list", "data": data})
}

func (s *Server) getChannel(w http.ResponseWriter, r *http.Request) {
	ch, err := s.store.Channel(r.Context(), r.PathValue("id"))
	if err != nil {
		s.writeAdminError(w, r, "channel", err)
		return
	}
	writeJSON(w, http.StatusOK, channelObject(&ch))
}

func (s *Server) patchChannel(w http.ResponseWriter, r *http.Request) {
	ch, err := s.store.Channel(r.Context(), r.PathValue("id"))
	if err != nil {
		s.writeAdminError(w, r, "channel", err)
		return
	}
	var f channelFields
	if !s.decodeAdmin(w, r, &f) {
		return
	}
	p := store.ChannelParams{Name: ch.Name, Provider: ch.Provider, BaseURL: ch.BaseURL, Models: ch.Models,
		ModelMap: ch.ModelMap, Priority: ch.Priority, Weight: ch.Weight, Enabled: ch.Enabled,
		MaxConcurrency: ch.MaxConcurrency, RPM: ch.RPM, TPM: ch.TPM}
	if err := f.apply(&p, false, ch.APIKey != ""); err != nil {
		s.writeError(w, r, err)
		return
	}
	if ch, err = s.store.UpdateChannel(r.Context(), ch.ID, p); err != nil {
		s.writeAdminError(w, r, "channel", err)
		return
	}
	s.channelsChanged(r)
	writeJSON(w, http.StatusOK, channelObject(&ch))
}

func (s *Server) deleteChannel(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if err := s.store.DeleteChannel(r.Context(), id); err != nil {
		s.writeAdminError(w, r, "channel", err)
		return
	}
	s.channelsChanged(r)
	writeJSON(w, http.StatusOK, map[string]any{"id": id, "object": "channel", "deleted": true})
}

// channelsChanged reloads this process's index now and tells every other process to.
func (s *Server) channelsChanged(r *http.Request) {
	if err := s.router.Refresh(r.Context()); err != nil {
		s.log.WarnContext(r.Context(), "refresh channels", "err", err)
	}
	route.AnnounceChannelsChanged(s.nc)
}
