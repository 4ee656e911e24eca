package ingress

import (
	"net/http"

	"github.com/sluicehq/sluice/pkg/store"
)

// teamFields is the JSON of a team's settable fields; a field absent from a PATCH is kept.
type teamFields struct {
	Name         *string            `json:"name"`
	BudgetUSD    nullable[float64]  `json:"budget_usd" range:"0,1e9"`
	BudgetPeriod nullable[string]   `json:"budget_period"`
	Models       nullable[[]string] `json:"models"`
	RPM          nullable[int]      `json:"rpm" range:"1,2147483647"`
	TPM          nullable[int]      `json:"tpm" range:"1,2147483647"`
}

func (f *teamFields) apply(p *store.TeamParams) error {
	// The key fields of the same names share the key's checks.
	kf := keyFields{Name: f.Name, BudgetUSD: f.BudgetUSD, BudgetPeriod: f.BudgetPeriod, Models: f.Models, RPM: f.RPM,
		TPM: f.TPM}
	kp := store.KeyParams{Name: p.Name, BudgetUSD: p.BudgetUSD, BudgetPeriod: p.BudgetPeriod, Models: p.Models,
		RPM: p.RPM, TPM: p.TPM}
	if err := kf.apply(&kp); err != nil {
		return err
	}
	p.Name, p.BudgetUSD, p.BudgetPeriod, p.Models, p.RPM, p.TPM = kp.Name, kp.BudgetUSD, kp.BudgetPeriod, kp.Models,
		kp.RPM, kp.TPM
	return nil
}

func (s *Server) teamObject(t *store.Team) map[string]any {
	o := map[string]any{"id": t.ID, "object": "team", "name": t.Name, "models": t.Models, "rpm": t.RPM,
		"tpm": t.TPM, "created_at": t.CreatedAt.Unix()}
	spendFields(o, t.Spend(), s.now())
	return o
}

func (s *Server) createTeam(w http.ResponseWriter, r *http.Request) {
	var f teamFields
	if !s.decodeAdmin(w, r, &f) {
		return
	}
	var p store.TeamParams
	if err := f.apply(&p); err != nil {
		s.writeError(w, r, err)
		return
	}
	t, err := s.store.CreateTeam(r.Context(), p)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, s.teamObject(&t))
}

func (s *Server) listTeams(w http.ResponseWriter, r *http.Request) {
	ts, err := s.store.Teams(r.Context())
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	data := make([]any, 0, len(ts))
	for i := range ts {
		data = append(data, s.teamObject(&ts[i]))
	}
	writeJSON(w, http.StatusOK, map[string]any{"object": "list", "data": data})
}

func (s *Server) getTeam(w http.ResponseWriter, r *http.Request) {
	t, err := s.store.TeamByID(r.Context(), r.PathValue("id"))
	if err != nil {
		s.writeAdminError(w, r, "team", err)
		return
	}
	writeJSON(w, http.StatusOK, s.teamObject(&t))
}

func (s *Server) patchTeam(w http.ResponseWriter, r *http.Request) {
	t, err := s.store.TeamByID(r.Context(), r.PathValue("id"))
	if err != nil {
		s.writeAdminError(w, r, "team", err)
		return
	}
	var f teamFields
	if !s.decodeAdmin(w, r, &f) {
		return
	}
	p := store.TeamParams{Name: t.Name, BudgetUSD: t.BudgetUSD, BudgetPeriod: t.BudgetPeriod, Models: t.Models,
		RPM: t.RPM, TPM: t.TPM}
	if err := f.apply(&p); err != nil {
		s.writeError(w, r, err)
		return
	}
	if t, err = s.store.UpdateTeam(r.Context(), t.ID, p); err != nil {
		s.writeAdminError(w, r, "team", err)
		return
	}
	s.keys.forgetTeam(t.ID)
	writeJSON(w, http.StatusOK, s.teamObject(&t))
}

func (s *Server) deleteTeam(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if err := s.store.DeleteTeam(r.Context(), id); err != nil {
		s.writeAdminError(w, r, "team", err)
		return
	}
	s.keys.forgetTeam(id)
	writeJSON(w, http.StatusOK, map[string]any{"id": id, "object": "team", "deleted": true})
}

// forgetTeam drops the keys of a team from the cache (after an admin change in this process).
func (c *keyCache) forgetTeam(teamID string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for s, e := range c.m {
		if e.key.TeamID != nil && *e.key.TeamID == teamID {
			delete(c.m, s)
		}
	}
}
