package store

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/sluicehq/sluice/pkg/ids"
	"github.com/sluicehq/sluice/pkg/secret"
)

// Key is an API key as stored: everything but its secret.
type Key struct {
	ID             string     `db:"id"`
	Name           string     `db:"name"`
	Hint           string     `db:"key_hint"`
	BudgetUSD      *float64   `db:"budget_usd"`
	SpentUSD       float64    `db:"spent_usd"`
	Models         []string   `db:"models"`
	RPM            *int       `db:"rpm"`
	MaxConcurrency *int       `db:"max_concurrency"`
	ExpiresAt      *time.Time `db:"expires_at"`
	CreatedAt      time.Time  `db:"created_at"`
	RevokedAt      *time.Time `db:"revoked_at"`
	TPM            *int       `db:"tpm"`
	BudgetPeriod   *string    `db:"budget_period"`
	TeamID         *string    `db:"team_id"`
	// CacheTTLS, if set, caches every answer of the key for that many seconds.
	CacheTTLS *int `db:"cache_ttl_s"`
	// Team is the key's team, read with the key; nil when it has none.
	Team *Team `db:"-"`
	// Days is the per-day spend of the last 32 days, read when the key has a budget period.
	Days []DaySpend `db:"-"`
}

// Spend is the key's budget and spend.
func (k *Key) Spend() Spend {
	return Spend{BudgetUSD: k.BudgetUSD, Period: k.BudgetPeriod, SpentUSD: k.SpentUSD, Days: k.Days}
}

// Charge adds cost to a copy's spend (a cache's view of its own charges).
func (k *Key) Charge(cost float64, now time.Time) {
	sp := k.Spend()
	sp.Charge(cost, now)
	k.SpentUSD, k.Days = sp.SpentUSD, sp.Days
	if k.Team != nil {
		t := *k.Team // other copies of the key share the pointer
		tsp := t.Spend()
		tsp.Charge(cost, now)
		t.SpentUSD, t.Days = tsp.SpentUSD, tsp.Days
		k.Team = &t
	}
}

// Rates are the key's own per-minute limits.
func (k *Key) Rates() RateLimits { return RateLimits{RPM: k.RPM, TPM: k.TPM} }

// Usable reports whether the key may be used at now: not revoked and not expired.
func (k *Key) Usable(now time.Time) bool {
	return k.RevokedAt == nil && (k.ExpiresAt == nil || now.Before(*k.ExpiresAt))
}

// AllowsModel reports whether the key may call model (a nil list allows every model).
func (k *Key) AllowsModel(model string) bool {
	if k.Models == nil {
		return true
	}
	for _, m := range k.Models {
		if m == model {
			return true
		}
	}
	return false
}

// OverBudget reports whether the key's spend in the budget period holding now (its lifetime
// without a period) has reached its budget.
func (k *Key) OverBudget(now time.Time) bool {
	sp := k.Spend()
	return sp.Over(now)
}

// KeyParams are the settable fields of a key. Nil means "no limit".
type KeyParams struct {
	Name           string
	BudgetUSD      *float64
	Models         []string
	RPM            *int
	MaxConcurrency *int
	ExpiresAt      *time.Time
	TPM            *int
	BudgetPeriod   *string
	TeamID         *string
	CacheTTLS      *int
}

// NewKeySecrets are returned once, when a key is created.
type NewKeySecrets struct {
	Key           secret.Secret // "sk-sl-…"
	WebhookSecret secret.Secret // "whsec_…"
}

// HashKey returns the stored hash of an API key secret.
func HashKey(key string) []byte {
	h := sha256.Sum256([]byte(key))
	return h[:]
}

const keyColumns = `id, name, key_hint, budget_usd::float8, key_spent(id)::float8, models, rpm, max_concurrency,
	expires_at, created_at, revoked_at, tpm, budget_period, team_id, cache_ttl_s`

// CreateKey makes a new API key and returns it with its secrets, which are not stored in
// the clear and cannot be read again.
func (s *Store) CreateKey(ctx context.Context, p KeyParams) (Key, NewKeySecrets, error) {
	sec := NewKeySecrets{
		Key:           secret.Secret("sk-sl-" + ids.Random(30)),
		WebhookSecret: secret.Secret("whsec_" + ids.Random(30)),
	}
	rows, err := s.pool.Query(ctx, `INSERT INTO api_keys
		(id, name, key_hash, key_hint, webhook_secret, budget_usd, models, rpm, max_concurrency, expires_at, tpm,
			budget_period, team_id, cache_ttl_s)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) RETURNING `+keyColumns,
		ids.New("key"), p.Name, HashKey(sec.Key.Reveal()), sec.Key.Hint(), s.sealer.Seal(sec.WebhookSecret.Reveal()),
		p.BudgetUSD, p.Models, p.RPM, p.MaxConcurrency, p.ExpiresAt, p.TPM, p.BudgetPeriod, p.TeamID, p.CacheTTLS)
	if err != nil {
		return Key{}, NewKeySecrets{}, fmt.Errorf("insert key: %w", classify(err))
	}
	k, err := pgx.CollectExactlyOneRow(rows, pgx.RowToStructByPos[Key])
	if err != nil {
		return Key{}, NewKeySecrets{}, fmt.Errorf("insert key: %w", classify(err))
	}
	return k, sec, nil
}

// KeyBySecret finds the key whose secret is key. It returns ErrNotFound if there is none;
// revoked and expired keys are returned, so check Usable.
func (s *Store) KeyBySecret(ctx context.Context, key string) (Key, error) {
	return s.oneKey(ctx, `SELECT `+keyColumns+` FROM api_keys WHERE key_hash = $1`, HashKey(key))
}

// KeyByID returns a key, or ErrNotFound.
func (s *Store) KeyByID(ctx context.Context, id string) (Key, error) {
	return s.oneKey(ctx, `SELECT `+keyColumns+` FROM api_keys WHERE id = $1`, id)
}

// Keys lists every key, newest first.
func (s *Store) Keys(ctx context.Context) ([]Key, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+keyColumns+` FROM api_keys ORDER BY id DESC`)
	if err != nil {
		return nil, fmt.Errorf("list keys: %w", err)
	}
	keys, err := pgx.CollectRows(rows, pgx.RowToStructByPos[Key])
	if err != nil {
		return nil, fmt.Errorf("list keys: %w", err)
	}
	for i := range keys {
		if err := s.fillKey(ctx, &keys[i]); err != nil {
			return nil, err
		}
	}
	return keys, nil
}

// UpdateKey replaces a key's settable fields (name and limits). It returns ErrNotFound if
// there is no such key.
func (s *Store) UpdateKey(ctx context.Context, id string, p KeyParams) (Key, error) {
	return s.oneKey(ctx, `UPDATE api_keys SET name = $2, budget_usd = $3, models = $4, rpm = $5,
		max_concurrency = $6, expires_at = $7, tpm = $8,
		budget_period = $9, team_id = $10, cache_ttl_s = $11 WHERE id = $1 RETURNING `+keyColumns,
		id, p.Name, p.BudgetUSD, p.Models, p.RPM, p.MaxConcurrency, p.ExpiresAt, p.TPM, p.BudgetPeriod, p.TeamID, p.CacheTTLS)
}

// RevokeKey revokes a key (once; revoking again keeps the first time). It returns
// ErrNotFound if there is no such key.
func (s *Store) RevokeKey(ctx context.Context, id string) (Key, error) {
	return s.oneKey(ctx, `UPDATE api_keys SET revoked_at = COALESCE(revoked_at, now())
		WHERE id = $1 RETURNING `+keyColumns, id)
}

// WebhookSecret returns the key's webhook signing secret, or ErrNotFound.
func (s *Store) WebhookSecret(ctx context.Context, keyID string) (secret.Secret, error) {
	var sealed []byte
	err := s.pool.QueryRow(ctx, `SELECT webhook_secret FROM api_keys WHERE id = $1`, keyID).Scan(&sealed)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", ErrNotFound
	}
	if err != nil {
		return "", fmt.Errorf("read webhook secret: %w", err)
	}
	v, err := s.sealer.Open(sealed)
	return secret.Secret(v), err
}

func (s *Store) oneKey(ctx context.Context, sql string, args ...any) (Key, error) {
	rows, err := s.pool.Query(ctx, sql, args...)
	if err != nil {
		return Key{}, fmt.Errorf("query key: %w", classify(err))
	}
	k, err := pgx.CollectExactlyOneRow(rows, pgx.RowToStructByPos[Key])
	if errors.Is(err, pgx.ErrNoRows) {
		return Key{}, ErrNotFound
	}
	if err != nil {
		return Key{}, fmt.Errorf("query key: %w", classify(err))
	}
	return k, s.fillKey(ctx, &k)
}

// fillKey reads what a key's row does not hold: its team, and its recent per-day spend if
// it has a budget period.
func (s *Store) fillKey(ctx context.Context, k *Key) error {
	if k.TeamID != nil {
		t, err := s.TeamByID(ctx, *k.TeamID)
		switch {
		case errors.Is(err, ErrNotFound): // deleted just now: the key has left it
		case err != nil:
			return err
		default:
			k.Team = &t
		}
	}
	if k.BudgetPeriod == nil {
		return nil
	}
	days, err := s.recentDays(ctx, k.ID)
	k.Days = days
	return err
}
