package e2e

import (
	"encoding/csv"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestUsageExport_Issue15_6: GET /admin/v1/usage groups by key, team, model or day, as JSON
// or CSV, across the requests of two ingresses.
func TestUsageExport_Issue15_6(t *testing.T) {
	t.Parallel()
	g := newGovStack(t, nil)
	g.channel(map[string]any{"provider": "fake", "base_url": "fake://", "models": []string{"m"}})
	var team map[string]any
	g.admin(http.MethodPost, "/admin/v1/teams", map[string]any{"name": "t"}, &team)
	teamID := team["id"].(string)
	a := g.newKey(map[string]any{"name": "a", "team_id": teamID})
	b := g.newKey(map[string]any{"name": "b"})
	for i := range 3 {
		for _, k := range []createdKey{a, b} {
			if res, body := g.chat(i, k.Key, "count me"); res.StatusCode != http.StatusOK {
				t.Fatalf("%d %s", res.StatusCode, body)
			}
		}
	}
	var byKey struct {
		Data []struct {
			Group    string `json:"group"`
			Requests int    `json:"requests"`
		} `json:"data"`
	}
	eventually(t, 30*time.Second, "six ledger rows", func() bool {
		byKey.Data = nil
		g.admin(http.MethodGet, "/admin/v1/usage?group_by=key", nil, &byKey)
		n := 0
		for _, r := range byKey.Data {
			n += r.Requests
		}
		return n == 6
	})
	if len(byKey.Data) != 2 {
		t.Errorf("by key: %+v, want two keys", byKey.Data)
	}
	res, body := g.do(http.MethodGet, "/admin/v1/usage?group_by=team&format=csv", adminToken, nil)
	if res.StatusCode != http.StatusOK || !strings.HasPrefix(res.Header.Get("Content-Type"), "text/csv") {
		t.Fatalf("csv: %d %s %s", res.StatusCode, res.Header.Get("Content-Type"), body)
	}
	recs, err := csv.NewReader(strings.NewReader(string(body))).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"": "3", teamID: "3"} // b is in no team
	if len(recs) != 3 || recs[0][0] != "team" || recs[0][1] != "requests" {
		t.Fatalf("csv rows %q", recs)
	}
	for _, r := range recs[1:] {
		if want[r[0]] != r[1] {
			t.Errorf("team %q: %s requests, want %s", r[0], r[1], want[r[0]])
		}
	}
	for _, q := range []string{"group_by=model&format=csv", "group_by=day&format=csv", "group_by=key&format=csv&team_id=" + teamID} {
		res, body := g.do(http.MethodGet, "/admin/v1/usage?"+q, adminToken, nil)
		recs, err := csv.NewReader(strings.NewReader(string(body))).ReadAll()
		if res.StatusCode != http.StatusOK || err != nil || len(recs) != 2 || recs[1][1] != map[bool]string{true: "3", false: "6"}[strings.Contains(q, "team_id")] {
			t.Errorf("%s: %d %q %v", q, res.StatusCode, recs, err)
		}
	}
	if res, _ := g.do(http.MethodGet, "/admin/v1/usage?group_by=channel", adminToken, nil); res.StatusCode != http.StatusBadRequest {
		t.Errorf("group_by=channel: %d, want 400", res.StatusCode)
	}
}
