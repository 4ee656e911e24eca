package ingress

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/sluicehq/sluice/pkg/store"
)

func (s *Server) adminRoutes(route func(string, http.HandlerFunc)) {
	a := func(h http.HandlerFunc) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			if err := s.checkAdmin(r); err != nil {
				s.writeError(w, r, err)
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
	route("GET /admin/v1/channels/health", a(s.channelsHealth))
	route("GET /admin/v1/channels/{id}", a(s.getChannel))
	route("PATCH /admin/v1/channels/{id}", a(s.patchChannel))
	route("DELETE /admin/v1/channels/{id}", a(s.deleteChannel))
	route("POST /admin/v1/teams", a(s.createTeam))
	route("GET /admin/v1/teams", a(s.listTeams))
	route("GET /admin/v1/teams/{id}", a(s.getTeam))
	route("PATCH /admin/v1/teams/{id}", a(s.patchTeam))
	route("DELETE /admin/v1/teams/{id}", a(s.deleteTeam))
	route("GET /admin/v1/prices", a(s.listPrices))
	route("GET /admin/v1/usage", a(s.usage))
	route("PUT /admin/v1/prices/{model...}", a(s.putPrice))
	route("GET /admin/v1/batches", a(s.adminListBatches))
	route("GET /admin/v1/batches/{id}", a(s.adminGetBatch))
	route("POST /admin/v1/batches/{id}/cancel", a(s.adminCancelBatch))
	route("GET /admin/v1/jobs", a(s.adminListJobs))
	route("GET /admin/v1/jobs/{id}", a(s.adminGetJob))
}

// Times are accepted in years 1 to 9999: what RFC 3339 can write, and inside what
// Postgres's timestamptz holds.
const (
	minUnix = -62135596800 // 0001-01-01T00:00:00Z
	maxUnix = 253402300799 // 9999-12-31T23:59:59Z
)

// keyFields is the JSON of a key's settable fields; a field absent from a PATCH is kept.
// The ranges are what the columns hold: budgets are numeric(20, 9), capped far below its
// 1e11 at a billion dollars; rpm and max_concurrency are integer columns.
type keyFields struct {
	Name           *string            `json:"name"`
	BudgetUSD      nullable[float64]  `json:"budget_usd" range:"0,1e9"`
	Models         nullable[[]string] `json:"models"`
	RPM            nullable[int]      `json:"rpm" range:"1,2147483647"`
	MaxConcurrency nullable[int]      `json:"max_concurrency" range:"1,2147483647"`
	ExpiresAt      nullable[int64]    `json:"expires_at" range:"-62135596800,253402300799"`
	TPM            nullable[int]      `json:"tpm" range:"1,2147483647"`
	BudgetPeriod   nullable[string]   `json:"budget_period"`
	TeamID         nullable[string]   `json:"team_id"`
	CacheTTLS      nullable[int]      `json:"cache_ttl_s" range:"1,31536000"`
}

func (f *keyFields) apply(p *store.KeyParams) error {
	if f.Name != nil {
		p.Name = *f.Name
	}
	if f.BudgetUSD.Set {
		p.BudgetUSD = f.BudgetUSD.Value
	}
	if f.Models.Set {
		p.Models = nil
		if f.Models.Value != nil {
			if err := checkModelNames("models", *f.Models.Value); err != nil {
				return err
			}
			p.Models = *f.Models.Value
			if p.Models == nil {
				p.Models = []string{}
			}
		}
	}
	if f.RPM.Set {
		p.RPM = f.RPM.Value
	}
	if f.MaxConcurrency.Set {
		p.MaxConcurrency = f.MaxConcurrency.Value
	}
	if f.TPM.Set {
		p.TPM = f.TPM.Value
	}
	if f.BudgetPeriod.Set {
		if v := f.BudgetPeriod.Value; v != nil && !store.ValidPeriod(*v) {
			return badRequest("budget_period", "'budget_period' must be null, \"daily\", \"weekly\" or \"monthly\".")
		}
		p.BudgetPeriod = f.BudgetPeriod.Value
	}
	if f.TeamID.Set {
		p.TeamID = f.TeamID.Value
	}
	if f.CacheTTLS.Set {
		p.CacheTTLS = f.CacheTTLS.Value
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

// checkModelNames refuses an empty model name in a list.
func checkModelNames(param string, names []string) error {
	for i, m := range names {
		if strings.TrimSpace(m) == "" || hasControl(m) {
			return badRequest(fmt.Sprintf("%s[%d]", param, i), "Model names must be non-empty, without control characters.")
		}
	}
	return nil
}

// spendFields are the budget members of a key or team object at now: spent_usd is the
// lifetime spend, period_spent_usd the spend of the current budget period (the lifetime's
// without one), period_start when that period began (null without one).
func spendFields(o map[string]any, sp store.Spend, now time.Time) {
	o["budget_usd"], o["budget_period"], o["spent_usd"] = sp.BudgetUSD, sp.Period, sp.SpentUSD
	o["period_spent_usd"], o["period_start"] = sp.PeriodSpent(now), nil
	if sp.Period != nil {
		o["period_start"] = store.PeriodStart(sp.Period, now).Unix()
	}
}

func (s *Server) keyObject(k *store.Key) map[string]any {
	o := keyObject(k)
	spendFields(o, k.Spend(), s.now())
	return o
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
		"max_concurrency": k.MaxConcurrency, "tpm": k.TPM, "team_id": k.TeamID,
		"cache_ttl_s": k.CacheTTLS, "expires_at": unix(k.ExpiresAt), "created_at": k.CreatedAt.Unix(),
		"revoked_at": unix(k.RevokedAt)}
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
	o := s.keyObject(&k)
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
		data = append(data, s.keyObject(&keys[i]))
	}
	writeJSON(w, http.StatusOK, map[string]any{"object": "list", "data": data})
}

func (s *Server) getKey(w http.ResponseWriter, r *http.Request) {
	k, err := s.store.KeyByID(r.Context(), r.PathValue("id"))
	if err != nil {
		s.writeAdminError(w, r, "key", err)
		return
	}
	writeJSON(w, http.StatusOK, s.keyObject(&k))
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
		MaxConcurrency: k.MaxConcurrency, ExpiresAt: k.ExpiresAt, TPM: k.TPM, BudgetPeriod: k.BudgetPeriod,
		TeamID: k.TeamID, CacheTTLS: k.CacheTTLS}
	if err := f.apply(&p); err != nil {
		s.writeError(w, r, err)
		return
	}
	if k, err = s.store.UpdateKey(r.Context(), k.ID, p); err != nil {
		s.writeAdminError(w, r, "key", err)
		return
	}
	s.keys.forget(k.ID)
	writeJSON(w, http.StatusOK, s.keyObject(&k))
}

func (s *Server) revokeKey(w http.ResponseWriter, r *http.Request) {
	k, err := s.store.RevokeKey(r.Context(), r.PathValue("id"))
	if err != nil {
		s.writeAdminError(w, r, "key", err)
		return
	}
	s.keys.forget(k.ID)
	writeJSON(w, http.StatusOK, s.keyObject(&k))
}

func (s *Server) listPrices(w http.ResponseWriter, r *http.Request) {
	ps, err := s.store.Prices(r.Context())
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"object": "list", "data": ps})
}

// priceFields is the body of PUT /admin/v1/prices/{model}.
type priceFields struct {
	Model         *string  `json:"model"` // optional; if given, it must be the path's model
	InputPerMTok  *float64 `json:"input_usd_per_1m" range:"0,1e6"`
	OutputPerMTok *float64 `json:"output_usd_per_1m" range:"0,1e6"`
}

func (s *Server) putPrice(w http.ResponseWriter, r *http.Request) {
	var f priceFields
	if !s.decodeAdmin(w, r, &f) {
		return
	}
	p := store.Price{Model: r.PathValue("model")}
	switch {
	case strings.TrimSpace(p.Model) == "":
		s.writeError(w, r, badRequest("model", "The path must name a model: PUT /admin/v1/prices/{model}."))
		return
	case f.Model != nil && *f.Model != p.Model:
		s.writeError(w, r, badRequest("model", "'model' in the body must be the model the path names."))
		return
	case f.InputPerMTok == nil || f.OutputPerMTok == nil:
		s.writeError(w, r, badRequest("", "'input_usd_per_1m' and 'output_usd_per_1m' are required."))
		return
	}
	p.InputPerMTok, p.OutputPerMTok = *f.InputPerMTok, *f.OutputPerMTok
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
