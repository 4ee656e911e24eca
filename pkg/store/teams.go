package store

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/sluicehq/sluice/pkg/ids"
)

// Team groups keys under limits of its own: a request of a key in a team must fit the key's
// limits and the team's. Its spend is the spend of jobs its keys ran while in it.
type Team struct {
	ID           string    `db:"id"`
	Name         string    `db:"name"`
	BudgetUSD    *float64  `db:"budget_usd"`
	BudgetPeriod *string   `db:"budget_period"`
	Models       []string  `db:"models"`
	RPM          *int      `db:"rpm"`
	TPM          *int      `db:"tpm"`
	CreatedAt    time.Time `db:"created_at"`
	SpentUSD     float64   `db:"spent_usd"` // lifetime
	// Days is the per-day spend of the last 32 days, read when the team has a budget period.
	Days []DaySpend `db:"-"`
}

// TeamParams are the settable fields of a team. Nil means "no limit".
type TeamParams struct {
	Name         string
	BudgetUSD    *float64
	BudgetPeriod *string
	Models       []string
	RPM          *int
	TPM          *int
}

// Spend is the team's budget and spend.
func (t *Team) Spend() Spend {
	return Spend{BudgetUSD: t.BudgetUSD, Period: t.BudgetPeriod, SpentUSD: t.SpentUSD, Days: t.Days}
}

// Rates are the team's per-minute limits.
func (t *Team) Rates() RateLimits { return RateLimits{RPM: t.RPM, TPM: t.TPM} }

// AllowsModel reports whether the team's keys may call model (a nil list allows every model).
func (t *Team) AllowsModel(model string) bool {
	return t.Models == nil || slices.Contains(t.Models, model)
}

const teamColumns = `id, name, budget_usd::float8, budget_period, models, rpm, tpm, created_at,
	COALESCE((SELECT sum(spent_usd) FROM spend_days WHERE subject = id), 0)::float8`

// CreateTeam makes a team.
func (s *Store) CreateTeam(ctx context.Context, p TeamParams) (Team, error) {
	return s.oneTeam(ctx, `INSERT INTO teams (id, name, budget_usd, budget_period, models, rpm, tpm)
		VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING `+teamColumns,
		ids.New("team"), p.Name, p.BudgetUSD, p.BudgetPeriod, p.Models, p.RPM, p.TPM)
}

// TeamByID returns a team, or ErrNotFound.
func (s *Store) TeamByID(ctx context.Context, id string) (Team, error) {
	return s.oneTeam(ctx, `SELECT `+teamColumns+` FROM teams WHERE id = $1`, id)
}

// Teams lists every team, newest first.
func (s *Store) Teams(ctx context.Context) ([]Team, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+teamColumns+` FROM teams ORDER BY id DESC`)
	if err != nil {
		return nil, fmt.Errorf("list teams: %w", err)
	}
	ts, err := pgx.CollectRows(rows, pgx.RowToStructByPos[Team])
	if err != nil {
		return nil, fmt.Errorf("list teams: %w", err)
	}
	for i := range ts {
		if err := s.fillTeam(ctx, &ts[i]); err != nil {
			return nil, err
		}
	}
	return ts, nil
}

// UpdateTeam replaces a team's settable fields. It returns ErrNotFound if there is no such team.
func (s *Store) UpdateTeam(ctx context.Context, id string, p TeamParams) (Team, error) {
	return s.oneTeam(ctx, `UPDATE teams SET name = $2, budget_usd = $3, budget_period = $4, models = $5, rpm = $6,
		tpm = $7 WHERE id = $1 RETURNING `+teamColumns, id, p.Name, p.BudgetUSD, p.BudgetPeriod, p.Models, p.RPM, p.TPM)
}

// DeleteTeam deletes a team; its keys leave it (and keep their own limits). It returns
// ErrNotFound if there is no such team.
func (s *Store) DeleteTeam(ctx context.Context, id string) error {
	tag, err := s.pool.Exec(ctx, `DELETE FROM teams WHERE id = $1`, id)
	if err != nil {
		return fmt.Errorf("delete team %s: %w", id, err)
	}
	if tag.RowsAffected() == 0 {
		return ErrNotFound
	}
	return nil
}

func (s *Store) oneTeam(ctx context.Context, sql string, args ...any) (Team, error) {
	rows, err := s.pool.Query(ctx, sql, args...)
	if err != nil {
		return Team{}, fmt.Errorf("query team: %w", classify(err))
	}
	t, err := pgx.CollectExactlyOneRow(rows, pgx.RowToStructByPos[Team])
	if errors.Is(err, pgx.ErrNoRows) {
		return Team{}, ErrNotFound
	}
	if err != nil {
		return Team{}, fmt.Errorf("query team: %w", classify(err))
	}
	return t, s.fillTeam(ctx, &t)
}

func (s *Store) fillTeam(ctx context.Context, t *Team) error {
	if t.BudgetPeriod == nil {
		return nil
	}
	days, err := s.recentDays(ctx, t.ID)
	t.Days = days
	return err
}
