package e2e

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/sluicehq/sluice/pkg/providers/providertest"
)

func TestAdminUsageAndNoPlaintextSecrets(t *testing.T) {
	t.Parallel()
	s := newStack(t, stackOpts{})
	_, srv := providertest.Start(t, providertest.Config{})
	const upstreamKey = "sk-upstream-very-secret-4242"
	s.channel(map[string]any{"provider": "openai", "base_url": srv.URL + "/v1", "api_key": upstreamKey,
		"models": []string{"gpt-4o-mini", "m2"}})
	k := s.newKey(map[string]any{"name": "usage", "budget_usd": 5, "rpm": 1000, "max_concurrency": 10})
	other := s.newKey(nil)
	for i := range 3 {
		if resp, b := s.do(http.MethodPost, "/v1/chat/completions", k.Key, chatBody("gpt-4o-mini", fmt.Sprint("one two ", i))); resp.StatusCode != 200 {
			t.Fatalf("%d %s", resp.StatusCode, b)
		}
	}
	if resp, b := s.do(http.MethodPost, "/v1/chat/completions", other.Key, chatBody("m2", "x")); resp.StatusCode != 200 {
		t.Fatalf("%d %s", resp.StatusCode, b)
	}
	var usage struct {
		Data []struct {
			Group            string  `json:"group"`
			Requests         int64   `json:"requests"`
			PromptTokens     int64   `json:"prompt_tokens"`
			CompletionTokens int64   `json:"completion_tokens"`
			CostUSD          float64 `json:"cost_usd"`
		} `json:"data"`
	}
	s.settled()
	s.admin(http.MethodGet, "/admin/v1/usage?group_by=model&key_id="+k.ID, nil, &usage)
	_, pt, ct := fakeAnswer("one two 0")
	if len(usage.Data) != 1 || usage.Data[0].Group != "gpt-4o-mini" || usage.Data[0].Requests != 3 ||
		usage.Data[0].PromptTokens != 3*pt || usage.Data[0].CompletionTokens != 3*ct ||
		!near(usage.Data[0].CostUSD, 3*(float64(pt)*0.15+float64(ct)*0.60)/1e6) {
		t.Errorf("usage by model = %+v", usage.Data)
	}
	s.admin(http.MethodGet, "/admin/v1/usage?group_by=day", nil, &usage)
	if len(usage.Data) != 1 || usage.Data[0].Requests != 4 || len(usage.Data[0].Group) != len("2006-01-02") {
		t.Errorf("usage by day = %+v", usage.Data)
	}
	if resp, _ := s.do(http.MethodGet, "/admin/v1/usage", k.Key, nil); resp.StatusCode != 401 {
		t.Errorf("an API key on the admin API: %d, want 401", resp.StatusCode)
	}

	// No table in the database holds our API key, its webhook secret or the upstream key in the clear.
	ctx := context.Background()
	rows, err := s.db.Pool.Query(ctx, `SELECT table_name FROM information_schema.tables
		WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'`)
	if err != nil {
		t.Fatal(err)
	}
	tables, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil || len(tables) < 5 {
		t.Fatalf("tables %v: %v", tables, err)
	}
	for _, table := range tables {
		for _, secret := range []string{k.Key, k.WebhookSecret, upstreamKey, strings.TrimPrefix(k.Key, "sk-sl-")} {
			var n int
			q := fmt.Sprintf(`SELECT count(*) FROM %s t WHERE position($1 in t::text) > 0`, pgx.Identifier{table}.Sanitize())
			if err := s.db.Pool.QueryRow(ctx, q, secret).Scan(&n); err != nil {
				t.Fatalf("scan %s: %v", table, err)
			}
			if n != 0 {
				t.Errorf("table %s holds a secret in the clear (%d rows)", table, n)
			}
		}
	}
}
