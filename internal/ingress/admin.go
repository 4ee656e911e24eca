package ingress

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/sluicehq/sluice/pkg/providers"
	"github.com/sluicehq/sluice/pkg/route"
	"github.com/sluicehq/sluice/pkg/secret"
	"github.com/sluicehq/sluice/pkg/store"
)

func (s *Server) adminRoutes(route func(string, http.HandlerFunc)) {
	a := func(h http.HandlerFunc) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			if !s.isAdmin(r) {
				s.writeError(w, r, apiError(http.StatusUnauthorized, "authentication_error", "invalid_admin_token",
					"Missing or incorrect admin token."))
				return
			}
			h(w, r)
		}
	}
	route("POST /admin/v1/keys", a(s.createKey))
	route("GET /admin/v1/keys", a(s.listKeys))
	route("GET /admin/v1/keys/{id}", a(s.getKey))
	route("PATCH /admin/v1/keys/{id}", a(s.patchKey))
	route("DELETE /admin/v1/keys/{id}", a(s.revokeKey))
	route("POST /admin/v1/channels", a(s.createChannel))
	route("GET /admin/v1/channels", a(s.listChannels))
	route("GET /admin/v1/channels/{id}", a(s.getChannel))
	route("PATCH /admin/v1/channels/{id}", a(s.patchChannel))
	route("DELETE /admin/v1/channels/{id}", a(s.deleteChannel))
	route("GET /admin/v1/prices", a(s.listPrices))
	route("GET /admin/v1/usage", a(s.usage))
	route("PUT /admin/v1/prices/{model...}", a(s.putPrice))
}

// keyFields is the JSON of a key's settable fields; a field absent from a PATCH is kept.
type keyFields struct {
	Name           *string            `json:"name"`
	BudgetUSD      nullable[float64]  `json:"budget_usd"`
	Models         nullable[[]string] `json:"models"`
	RPM            nullable[int]      `json:"rpm"`
	MaxConcurrency nullable[int]      `json:"max_concurrency"`
	ExpiresAt      nullable[int64]    `json:"expires_at"`
}

// nullable tells "absent" (Set false) from "null" (Set, Value nil) from a value.
type nullable[T any] struct {
	Set   bool
	Value *T
}

func (n *nullable[T]) UnmarshalJSON(b []byte) error {
	n.Set = true
	if string(b) == "null" {
		n.Value = nil
		return nil
	}
	var v T
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	n.Value = &v
	return nil
}

func (f *keyFields) apply(p *store.KeyParams) error {
	if f.Name != nil {
		p.Name = *f.Name
	}
	if f.BudgetUSD.Set {
		if v := f.BudgetUSD.Value; v != nil && *v < 0 {
			return badRequest("budget_usd", "'budget_usd' must be >= 0 or null.")
		}
		p.BudgetUSD = f.BudgetUSD.Value
	}
	if f.Models.Set {
		p.Models = nil
		if f.Models.Value != nil {
			p.Models = *f.Models.Value
			if p.Models == nil {
				p.Models = []string{}
			}
		}
	}
	for _, v := range []struct {
		name string
		n    nullable[int]
		dst  **int
	}{{"rpm", f.RPM, &p.RPM}, {"max_concurrency", f.MaxConcurrency, &p.MaxConcurrency}} {
		if v.n.Set {
			if v.n.Value != nil && *v.n.Value < 1 {
				return badRequest(v.name, fmt.Sprintf("'%s' must be >= 1 or null.", v.name))
			}
			*v.dst = v.n.Value
		}
	}
	if f.ExpiresAt.Set {
		p.ExpiresAt = nil
		if f.ExpiresAt.Value != nil {
			t := time.Unix(*f.ExpiresAt.Value, 0)
			p.ExpiresAt = &t
		}
	}
	return nil
}

func keyObject(k *store.Key) map[string]any {
	unix := func(t *time.Time) any {
		if t == nil {
			return nil
		}
		return t.Unix()
	}
	return map[string]any{"id": k.ID, "object": "api_key", "name": k.Name, "key_hint": k.Hint,
		"budget_usd": k.BudgetUSD, "spent_usd": k.SpentUSD, "models": k.Models, "rpm": k.RPM,
		"max_concurrency": k.MaxConcurrency, "expires_at": unix(k.ExpiresAt), "created_at": k.CreatedAt.Unix(),
		"revoked_at": unix(k.RevokedAt)}
}

// decodeAdmin reads an admin JSON body into v.
func (s *Server) decodeAdmin(w http.ResponseWriter, r *http.Request, v any) bool {
	b, err := s.readBody(w, r)
	if err == nil && json.Unmarshal(b, v) != nil {
		err = badRequest("", "The body must be a JSON object with the documented fields.")
	}
	if err != nil {
		s.writeError(w, r, err)
		return false
	}
	return true
}

func (s *Server) createKey(w http.ResponseWriter, r *http.Request) {
	var f keyFields
	if !s.decodeAdmin(w, r, &f) {
		return
	}
	var p store.KeyParams
	if err := f.apply(&p); err != nil {
		s.writeError(w, r, err)
		return
	}
	k, sec, err := s.store.CreateKey(r.Context(), p)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	o := keyObject(&k)
	o["key"], o["webhook_secret"] = sec.Key.Reveal(), sec.WebhookSecret.Reveal()
	writeJSON(w, http.StatusCreated, o)
}

func (s *Server) listKeys(w http.ResponseWriter, r *http.Request) {
	keys, err := s.store.Keys(r.Context())
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	data := make([]any, 0, len(keys))
	for i := range keys {
		data = append(data, keyObject(&keys[i]))
	}
	writeJSON(w, http.StatusOK, map[string]any{"object": "list", "data": data})
}

func (s *Server) getKey(w http.ResponseWriter, r *http.Request) {
	k, err := s.store.KeyByID(r.Context(), r.PathValue("id"))
	if err != nil {
		s.writeAdminError(w, r, "key", err)
		return
	}
	writeJSON(w, http.StatusOK, keyObject(&k))
}

func (s *Server) patchKey(w http.ResponseWriter, r *http.Request) {
	k, err := s.store.KeyByID(r.Context(), r.PathValue("id"))
	if err != nil {
		s.writeAdminError(w, r, "key", err)
		return
	}
	var f keyFields
	if !s.decodeAdmin(w, r, &f) {
		return
	}
	p := store.KeyParams{Name: k.Name, BudgetUSD: k.BudgetUSD, Models: k.Models, RPM: k.RPM,
		MaxConcurrency: k.MaxConcurrency, ExpiresAt: k.ExpiresAt}
	if err := f.apply(&p); err != nil {
		s.writeError(w, r, err)
		return
	}
	if k, err = s.store.UpdateKey(r.Context(), k.ID, p); err != nil {
		s.writeAdminError(w, r, "key", err)
		return
	}
	s.keys.forget(k.ID)
	writeJSON(w, http.StatusOK, keyObject(&k))
}

func (s *Server) revokeKey(w http.ResponseWriter, r *http.Request) {
	k, err := s.store.RevokeKey(r.Context(), r.PathValue("id"))
	if err != nil {
		s.writeAdminError(w, r, "key", err)
		return
	}
	s.keys.forget(k.ID)
	writeJSON(w, http.StatusOK, keyObject(&k))
}

// channelFields is the JSON of a channel; absent fields keep their value on PATCH.
type channelFields struct {
	Name     *string            `json:"name"`
	Provider *string            `json:"provider"`
	BaseURL  *string            `json:"base_url"`
	APIKey   *string            `json:"api_key"`
	Models   *[]string          `json:"models"`
	ModelMap *map[string]string `json:"model_map"`
	Priority *int               `json:"priority"`
	Weight   *int               `json:"weight"`
	Enabled  *bool              `json:"enabled"`
}

func (f *channelFields) apply(p *store.ChannelParams) error {
	set := func(dst *string, v *string) {
		if v != nil {
			*dst = *v
		}
	}
	set(&p.Name, f.Name)
	set(&p.Provider, f.Provider)
	set(&p.BaseURL, f.BaseURL)
	if f.APIKey != nil {
		k := secret.Secret(*f.APIKey)
		p.APIKey = &k
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
		if *f.Weight < 1 {
			return badRequest("weight", "'weight' must be >= 1.")
		}
		p.Weight = *f.Weight
	}
	if f.Enabled != nil {
		p.Enabled = *f.Enabled
	}
	switch {
	case p.Name == "":
		return badRequest("name", "'name' is required.")
	case !providers.Known(p.Provider):
		return badRequest("provider", fmt.Sprintf("Unknown provider %q.", p.Provider))
	case len(p.Models) == 0 && len(p.ModelMap) == 0:
		return badRequest("models", "'models' must list at least one model.")
	}
	return nil
}

func (s *Server) createChannel(w http.ResponseWriter, r *http.Request) {
	var f channelFields
	if !s.decodeAdmin(w, r, &f) {
		return
	}
	p := store.ChannelParams{Weight: 1, Enabled: true}
	if err := f.apply(&p); err != nil {
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
		"created_at": ch.CreatedAt.Unix(), "updated_at": ch.UpdatedAt.Unix()}
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
		ModelMap: ch.ModelMap, Priority: ch.Priority, Weight: ch.Weight, Enabled: ch.Enabled}
	if err := f.apply(&p); err != nil {
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

func (s *Server) listPrices(w http.ResponseWriter, r *http.Request) {
	ps, err := s.store.Prices(r.Context())
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"object": "list", "data": ps})
}

func (s *Server) putPrice(w http.ResponseWriter, r *http.Request) {
	var p store.Price
	if !s.decodeAdmin(w, r, &p) {
		return
	}
	p.Model = r.PathValue("model")
	if p.InputPerMTok < 0 || p.OutputPerMTok < 0 {
		s.writeError(w, r, badRequest("", "Prices must be >= 0."))
		return
	}
	if err := s.store.SetPrice(r.Context(), p); err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, p)
}

func (s *Server) writeAdminError(w http.ResponseWriter, r *http.Request, what string, err error) {
	if errors.Is(err, store.ErrNotFound) {
		s.writeError(w, r, apiError(http.StatusNotFound, "not_found_error", what+"_not_found",
			fmt.Sprintf("No %s with id %q.", what, r.PathValue("id"))))
		return
	}
	s.writeError(w, r, err)
}

// usage serves GET /admin/v1/usage?key_id=&from=&to=&group_by=model|day (from/to: Unix
// seconds or RFC 3339; default the last 30 days).
func (s *Server) usage(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	parse := func(name string, def time.Time) (time.Time, error) {
		v := q.Get(name)
		if v == "" {
			return def, nil
		}
		if n, err := strconv.ParseInt(v, 10, 64); err == nil {
			return time.Unix(n, 0), nil
		}
		t, err := time.Parse(time.RFC3339, v)
		if err != nil {
			return time.Time{}, badRequest(name, fmt.Sprintf("'%s' must be Unix seconds or an RFC 3339 time.", name))
		}
		return t, nil
	}
	now := time.Now()
	from, err := parse("from", now.AddDate(0, 0, -30))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	to, err := parse("to", now.Add(time.Minute))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	group := q.Get("group_by")
	if group == "" {
		group = "model"
	}
	if group != "model" && group != "day" {
		s.writeError(w, r, badRequest("group_by", "'group_by' must be model or day."))
		return
	}
	rows, err := s.store.Usage(r.Context(), q.Get("key_id"), from, to, group)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if rows == nil {
		rows = []store.UsageRow{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"object": "list", "group_by": group, "from": from.Unix(), "to": to.Unix(),
		"data": rows})
}
