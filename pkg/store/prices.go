package store

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// Price is what a model costs, in USD per million tokens.
type Price struct {
	Model         string  `json:"model"`
	InputPerMTok  float64 `json:"input_usd_per_1m"`
	OutputPerMTok float64 `json:"output_usd_per_1m"`
}

// SetPrice creates or replaces a model's price.
func (s *Store) SetPrice(ctx context.Context, p Price) error {
	_, err := s.pool.Exec(ctx, `INSERT INTO model_prices (model, input_usd_per_1m, output_usd_per_1m)
		VALUES ($1, $2, $3) ON CONFLICT (model) DO UPDATE
		SET input_usd_per_1m = EXCLUDED.input_usd_per_1m, output_usd_per_1m = EXCLUDED.output_usd_per_1m,
		    updated_at = now()`, p.Model, p.InputPerMTok, p.OutputPerMTok)
	if err != nil {
		return fmt.Errorf("set price of %s: %w", p.Model, classify(err))
	}
	return nil
}

// Prices lists every model price.
func (s *Store) Prices(ctx context.Context) ([]Price, error) {
	rows, err := s.pool.Query(ctx, `SELECT model, input_usd_per_1m::float8, output_usd_per_1m::float8
		FROM model_prices ORDER BY model`)
	if err != nil {
		return nil, fmt.Errorf("list prices: %w", err)
	}
	ps, err := pgx.CollectRows(rows, pgx.RowToStructByPos[Price])
	if err != nil {
		return nil, fmt.Errorf("list prices: %w", err)
	}
	return ps, nil
}

// UsageRow is one group of GET /admin/v1/usage.
type UsageRow struct {
	// Group is the model, the day (YYYY-MM-DD, UTC), the key's id, or the team's id ("" for
	// jobs of keys in no team).
	Group            string  `json:"group"`
	Requests         int64   `json:"requests"`
	PromptTokens     int64   `json:"prompt_tokens"`
	CompletionTokens int64   `json:"completion_tokens"`
	CostUSD          float64 `json:"cost_usd"`
	CacheHits        int64   `json:"cache_hits"`
}

// UsageGroups are what Usage can group by, and the SQL of each.
var usageGroups = map[string]string{
	"model": "model",
	"day":   "to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD')",
	"key":   "key_id",
	"team":  "COALESCE(team_id, '')",
}

// ValidUsageGroup reports whether Usage can group by g.
func ValidUsageGroup(g string) bool { _, ok := usageGroups[g]; return ok }

// UsageFilter selects ledger rows: between From and To (To exclusive), of one key and one
// team when set.
type UsageFilter struct {
	KeyID, TeamID string
	From, To      time.Time
}

// Usage sums the ledger rows f selects, grouped by "model", "day", "key" or "team" (an
// unknown group is "model").
func (s *Store) Usage(ctx context.Context, f UsageFilter, groupBy string) ([]UsageRow, error) {
	group, ok := usageGroups[groupBy]
	if !ok {
		group = usageGroups["model"]
	}
	// group is one of the constants above, never input.
	rows, err := s.pool.Query(ctx, `SELECT `+group+` AS g, count(*), COALESCE(sum(prompt_tokens), 0)::bigint,
		COALESCE(sum(completion_tokens), 0)::bigint, COALESCE(sum(cost_usd), 0)::float8, count(*) FILTER (WHERE cache_hit)
		FROM usage_ledger WHERE ($1 = '' OR key_id = $1) AND ($4 = '' OR team_id = $4) AND created_at >= $2 AND created_at < $3
		GROUP BY g ORDER BY g`, f.KeyID, f.From, f.To, f.TeamID)
	if err != nil {
		return nil, fmt.Errorf("usage: %w", classify(err))
	}
	out, err := pgx.CollectRows(rows, pgx.RowToStructByPos[UsageRow])
	if err != nil {
		return nil, fmt.Errorf("usage: %w", classify(err))
	}
	return out, nil
}
