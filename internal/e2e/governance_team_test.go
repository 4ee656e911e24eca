package e2e

import (
	"net/http"
	"testing"
	"time"
)

// TestTeamBudgetPeriod_Issue15_3: a team's daily budget is shared by its keys across two
// ingresses and two workers, each key within its own budget; it restarts at the next UTC
// day (every process's clock moved, nothing sleeps), the team's lifetime spend staying.
func TestTeamBudgetPeriod_Issue15_3(t *testing.T) {
	t.Parallel()
	clock := &testClock{}
	g := newGovStack(t, clock)
	g.channel(map[string]any{"provider": "fake", "base_url": "fake://", "models": []string{"m"}})
	g.price("m", 1000, 1000) // $0.001 a token: one call spends the team's budget
	var team map[string]any
	g.admin(http.MethodPost, "/admin/v1/teams", map[string]any{"name": "research", "budget_usd": 0.01,
		"budget_period": "daily"}, &team)
	teamID := team["id"].(string)
	a := g.newKey(map[string]any{"name": "a", "team_id": teamID, "budget_usd": 100})
	b := g.newKey(map[string]any{"name": "b", "team_id": teamID})
	if res, body := g.chat(0, a.Key, "spend the team's money"); res.StatusCode != http.StatusOK {
		t.Fatalf("first call: %d %s", res.StatusCode, body)
	}
	eventually(t, 30*time.Second, "the team's charge settled", func() bool {
		team = nil
		g.admin(http.MethodGet, "/admin/v1/teams/"+teamID, nil, &team)
		return team["period_spent_usd"].(float64) > 0
	})
	// Both keys are now refused, on both ingresses: the team's budget is spent, not theirs.
	for i, k := range []createdKey{a, b} {
		res, body := g.chat(i, k.Key, "more")
		if _, code, msg := apiErr(t, body); res.StatusCode != http.StatusTooManyRequests || code != "insufficient_quota" {
			t.Fatalf("key %d over the team's budget: %d %s %s", i, res.StatusCode, code, msg)
		}
	}
	clock.advance(24 * time.Hour)
	for i, k := range []createdKey{a, b} {
		if res, body := g.chat(i+1, k.Key, "a new day"); res.StatusCode != http.StatusOK {
			t.Fatalf("key %d after the rollover: %d %s", i, res.StatusCode, body)
		}
	}
	team = nil
	g.admin(http.MethodGet, "/admin/v1/teams/"+teamID, nil, &team)
	if team["spent_usd"].(float64) < 0.01 {
		t.Errorf("team after the rollover: %v; want its lifetime spend kept", team)
	}
}

// TestTeamLimits_Issue15_3: a request must fit the key's limits and its team's: the team's
// model allowlist and rpm apply to every key in it, a key's own rpm on top; a team can be
// left and deleted.
func TestTeamLimits_Issue15_3(t *testing.T) {
	t.Parallel()
	g := newGovStack(t, nil)
	g.channel(map[string]any{"provider": "fake", "base_url": "fake://", "models": []string{"m", "m2"}})
	var team map[string]any
	g.admin(http.MethodPost, "/admin/v1/teams", map[string]any{"name": "ops", "models": []string{"m"}, "rpm": 3}, &team)
	teamID := team["id"].(string)
	a := g.newKey(map[string]any{"name": "a", "team_id": teamID, "rpm": 2})
	b := g.newKey(map[string]any{"name": "b", "team_id": teamID})
	res, body := g.do(http.MethodPost, "/v1/chat/completions", b.Key, chatBody("m2", "hi"))
	if _, code, _ := apiErr(t, body); res.StatusCode != http.StatusForbidden || code != "model_not_allowed" {
		t.Fatalf("a model outside the team's allowlist: %d %s", res.StatusCode, body)
	}
	// Key a: its own rpm of 2 refuses its third call; the team's window holds a's two.
	for i := range 3 {
		res, body := g.chat(i, a.Key, "hi")
		if want := map[bool]int{true: 200, false: 429}[i < 2]; res.StatusCode != want {
			t.Fatalf("key a call %d: %d %s", i, res.StatusCode, body)
		}
	}
	// Key b: the team's rpm of 3 leaves it one call.
	for i := range 2 {
		res, body := g.chat(i, b.Key, "hi")
		if want := map[bool]int{true: 200, false: 429}[i < 1]; res.StatusCode != want {
			t.Fatalf("key b call %d: %d %s", i, res.StatusCode, body)
		}
		if i == 1 && (res.Header.Get("X-Ratelimit-Limit-Requests") != "3" || res.Header.Get("Retry-After") == "") {
			t.Errorf("team 429 headers: %v", res.Header)
		}
	}
	// Out of the team, b is bound by nothing.
	var kb map[string]any
	g.admin(http.MethodPatch, "/admin/v1/keys/"+b.ID, map[string]any{"team_id": nil}, &kb)
	if kb["team_id"] != nil {
		t.Fatalf("key after leaving its team: %v", kb)
	}
	if res, body := g.chat(0, b.Key, "free"); res.StatusCode != http.StatusOK {
		t.Fatalf("b out of the team: %d %s", res.StatusCode, body)
	}
	g.admin(http.MethodDelete, "/admin/v1/teams/"+teamID, nil, nil)
	var ka map[string]any
	g.admin(http.MethodGet, "/admin/v1/keys/"+a.ID, nil, &ka)
	if ka["team_id"] != nil {
		t.Errorf("key of a deleted team: %v", ka)
	}
}
