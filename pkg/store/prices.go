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
	Group            string  `json:"group"` // the model, or the day (YYYY-MM-DD, UTC)
	Requests         int64   `json:"requests"`
	PromptTokens     int64   `json:"prompt_tokens"`
	CompletionTokens int64   `json:"completion_tokens"`
	CostUSD          float64 `json:"cost_usd"`
}

// Usage sums the ledger between from and to (to exclusive), optionally for one key, grouped
// by "model" or "day".
func (s *Store) Usage(ctx context.Context, keyID string, from, to time.Time, groupBy string) ([]UsageRow, error) {
	group := "model"
	if groupBy == "day" {
		group = "to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD')"
	}
	// group is one of two constants above, never input.
	rows, err := s.pool.Query(ctx, `SELECT `+group+` AS g, count(*), COALESCE(sum(prompt_tokens), 0)::bigint,
		COALESCE(sum(completion_tokens), 0)::bigint, COALESCE(sum(cost_usd), 0)::float8
		FROM usage_ledger WHERE ($1 = '' OR key_id = $1) AND created_at >= $2 AND created_at < $3
		GROUP BY g ORDER BY g`, keyID, from, to)
	if err != nil {
		return nil, fmt.Errorf("usage: %w", classify(err))
	}
	out, err := pgx.CollectRows(rows, pgx.RowToStructByPos[UsageRow])
	if err != nil {
		return nil, fmt.Errorf("usage: %w", classify(err))
	}
	return out, nil
}
