package e2e

import (
	"context"
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/sluicehq/sluice/pkg/providers/providertest"
)

// TestKeyCheckedAtPickUp_Issue9_2: admission is not the only check. Jobs queued while their
// key is revoked, or while it spends its budget, end failed at pick-up with a clear code,
// uncharged, and never reach the upstream; a good key's job beside them runs.
func TestKeyCheckedAtPickUp_Issue9_2(t *testing.T) {
	t.Parallel()
	s := newStack(t, stackOpts{noWorker: true})
	up, srv := providertest.Start(t, providertest.Config{})
	s.channel(map[string]any{"provider": "openai", "base_url": srv.URL + "/v1", "models": []string{"m"}})
	s.price("m", 1, 1)
	revoked := s.newKey(map[string]any{"name": "revoked"})
	budget := s.newKey(map[string]any{"name": "budget", "budget_usd": 100})
	good := s.newKey(map[string]any{"name": "good"})

	submit := func(k createdKey) string {
		t.Helper()
		code, j := s.submit(k.Key, map[string]any{"endpoint": "/v1/chat/completions", "body": chatBody("m", "queued")})
		if code != http.StatusAccepted {
			t.Fatalf("submit = %d", code)
		}
		return j.ID
	}
	var revokedJobs, budgetJobs []string
	for range 3 {
		revokedJobs = append(revokedJobs, submit(revoked))
		budgetJobs = append(budgetJobs, submit(budget))
	}
	goodJob := submit(good)

	// While the jobs wait (no worker yet), one key is revoked and the other's budget is cut
	// below what it has spent (nothing: a budget of 0 is spent).
	s.admin(http.MethodDelete, "/admin/v1/keys/"+revoked.ID, nil, nil)
	s.admin(http.MethodPatch, "/admin/v1/keys/"+budget.ID, map[string]any{"budget_usd": 0}, nil)
	_, stop := s.startWorker()
	defer stop()

	type result struct{ status, code string }
	final := func(id string) result {
		var r result
		eventually(t, 20*time.Second, "job "+id+" ends", func() bool {
			var row struct {
				Status string
				Err    []byte
			}
			if err := s.db.Pool.QueryRow(context.Background(), `SELECT status, COALESCE(error::text, '{}') FROM jobs WHERE id = $1`, id).
				Scan(&row.Status, &row.Err); err != nil {
				return false
			}
			var e struct {
				Code string `json:"code"`
			}
			_ = json.Unmarshal(row.Err, &e)
			r = result{row.Status, e.Code}
			return row.Status == "succeeded" || row.Status == "failed" || row.Status == "canceled"
		})
		return r
	}
	for _, id := range revokedJobs {
		if got := final(id); got != (result{"failed", "invalid_api_key"}) {
			t.Errorf("revoked key's queued job %s: %+v, want failed with invalid_api_key", id, got)
		}
	}
	for _, id := range budgetJobs {
		if got := final(id); got != (result{"failed", "insufficient_quota"}) {
			t.Errorf("over-budget key's queued job %s: %+v, want failed with insufficient_quota", id, got)
		}
	}
	if got := final(goodJob); got.status != "succeeded" {
		t.Errorf("good key's job: %+v, want succeeded", got)
	}
	if n := up.Stats().Succeeded; n != 1 {
		t.Errorf("upstream answered %d calls, want 1 (only the good key's job runs)", n)
	}
	var rows int
	if err := s.db.Pool.QueryRow(context.Background(), `SELECT count(*) FROM usage_ledger`).Scan(&rows); err != nil || rows != 1 {
		t.Errorf("ledger rows %d (%v), want 1: refused jobs are not charged", rows, err)
	}
}
