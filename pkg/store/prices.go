package store

import (
	"context"
	"fmt"

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
		return fmt.Errorf("set price of %s: %w", p.Model, err)
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
