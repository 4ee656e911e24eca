package store

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/sluicehq/sluice/pkg/ids"
	"github.com/sluicehq/sluice/pkg/secret"
)

// Channel is one upstream: a provider, where it is, its key and the models it serves.
type Channel struct {
	ID             string            `json:"id"`
	Name           string            `json:"name"`
	Provider       string            `json:"provider"`
	BaseURL        string            `json:"base_url"`
	APIKey         secret.Secret     `json:"-"`
	APIKeyHint     string            `json:"api_key"`
	Models         []string          `json:"models"`
	ModelMap       map[string]string `json:"model_map"`
	Priority       int               `json:"priority"`
	Weight         int               `json:"weight"`
	Enabled        bool              `json:"enabled"`
	DisabledReason string            `json:"disabled_reason,omitempty"`
	// MaxConcurrency caps this channel's upstream calls in flight, across every worker
	// (nil: no cap beyond the workers' slots).
	MaxConcurrency *int `json:"max_concurrency"`
	// RPM and TPM are the upstream account's requests and tokens per minute (nil: none),
	// which the workers pace their calls to.
	RPM       *int      `json:"rpm"`
	TPM       *int      `json:"tpm"`
	CreatedAt time.Time `json:"-"`
	UpdatedAt time.Time `json:"-"`

	// KeyUnreadable is set when the stored upstream key cannot be opened with any configured
	// encryption key (ErrUnsealable); APIKey is then empty and the channel must not be used.
	// DisabledReason says so, unless the channel was already disabled for another reason.
	KeyUnreadable bool `json:"-"`
}

// ChannelParams are a channel's settable fields. A nil APIKey on update keeps the old key.
type ChannelParams struct {
	Name     string
	Provider string
	BaseURL  string
	APIKey   *secret.Secret
	Models   []string
	ModelMap map[string]string
	Priority int
	Weight   int
	Enabled  bool
	// MaxConcurrency, RPM and TPM are nil for no cap.
	MaxConcurrency *int
	RPM, TPM       *int
}

const channelColumns = `id, name, provider, base_url, api_key, api_key_hint, models, model_map, priority,
	weight, enabled, disabled_reason, created_at, updated_at, max_concurrency, rpm, tpm`

// CreateChannel stores a new channel; its upstream key is sealed.
func (s *Store) CreateChannel(ctx context.Context, p ChannelParams) (Channel, error) {
	var sealed []byte
	hint := ""
	if p.APIKey != nil && *p.APIKey != "" {
		sealed, hint = s.sealer.Seal(p.APIKey.Reveal()), p.APIKey.Hint()
	}
	return s.oneChannel(ctx, `INSERT INTO channels
		(id, name, provider, base_url, api_key, api_key_hint, models, model_map, priority, weight, enabled, max_concurrency,
			rpm, tpm)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) RETURNING `+channelColumns,
		ids.New("ch"), p.Name, p.Provider, p.BaseURL, sealed, hint, nonNil(p.Models), nonNilMap(p.ModelMap),
		p.Priority, max(p.Weight, 1), p.Enabled, p.MaxConcurrency, p.RPM, p.TPM)
}

// UpdateChannel replaces a channel's fields. Enabling a channel clears its disabled reason.
// It returns ErrNotFound if there is no such channel.
func (s *Store) UpdateChannel(ctx context.Context, id string, p ChannelParams) (Channel, error) {
	var sealed []byte
	hint := ""
	if p.APIKey != nil {
		sealed, hint = s.sealer.Seal(p.APIKey.Reveal()), p.APIKey.Hint()
	}
	return s.oneChannel(ctx, `UPDATE channels SET name = $2, provider = $3, base_url = $4,
		api_key = CASE WHEN $5::bool THEN $6 ELSE api_key END,
		api_key_hint = CASE WHEN $5::bool THEN $7 ELSE api_key_hint END,
		models = $8, model_map = $9, priority = $10, weight = $11, enabled = $12,
		disabled_reason = CASE WHEN $12 THEN '' ELSE disabled_reason END, max_concurrency = $13, rpm = $14, tpm = $15,
		updated_at = now()
		WHERE id = $1 RETURNING `+channelColumns,
		id, p.Name, p.Provider, p.BaseURL, p.APIKey != nil, sealed, hint, nonNil(p.Models), nonNilMap(p.ModelMap),
		p.Priority, max(p.Weight, 1), p.Enabled, p.MaxConcurrency, p.RPM, p.TPM)
}

// DisableChannel turns a channel off and records why (for example, the upstream rejected its key).
func (s *Store) DisableChannel(ctx context.Context, id, reason string) error {
	_, err := s.pool.Exec(ctx, `UPDATE channels SET enabled = false, disabled_reason = $2, updated_at = now()
		WHERE id = $1`, id, reason)
	if err != nil {
		return fmt.Errorf("disable channel %s: %w", id, err)
	}
	return nil
}

// DeleteChannel removes a channel. It returns ErrNotFound if there is no such channel.
func (s *Store) DeleteChannel(ctx context.Context, id string) error {
	tag, err := s.pool.Exec(ctx, `DELETE FROM channels WHERE id = $1`, id)
	if err != nil {
		return fmt.Errorf("delete channel %s: %w", id, classify(err))
	}
	if tag.RowsAffected() == 0 {
		return ErrNotFound
	}
	return nil
}

// Channel returns one channel, or ErrNotFound.
func (s *Store) Channel(ctx context.Context, id string) (Channel, error) {
	return s.oneChannel(ctx, `SELECT `+channelColumns+` FROM channels WHERE id = $1`, id)
}

// Channels returns every channel, enabled or not, with upstream keys decrypted. A channel
// whose key no configured encryption key opens is returned with KeyUnreadable set rather
// than failing the whole list, so one bad value cannot take every channel down.
func (s *Store) Channels(ctx context.Context) ([]Channel, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+channelColumns+` FROM channels ORDER BY priority DESC, id`)
	if err != nil {
		return nil, fmt.Errorf("list channels: %w", err)
	}
	return s.collectChannels(rows)
}

func (s *Store) oneChannel(ctx context.Context, sql string, args ...any) (Channel, error) {
	rows, err := s.pool.Query(ctx, sql, args...)
	if err != nil {
		return Channel{}, fmt.Errorf("query channel: %w", classify(err))
	}
	chs, err := s.collectChannels(rows)
	if err != nil {
		return Channel{}, err
	}
	if len(chs) == 0 {
		return Channel{}, ErrNotFound
	}
	return chs[0], nil
}

func (s *Store) collectChannels(rows pgx.Rows) ([]Channel, error) {
	var out []Channel
	for rows.Next() {
		var c Channel
		var sealed []byte
		if err := rows.Scan(&c.ID, &c.Name, &c.Provider, &c.BaseURL, &sealed, &c.APIKeyHint, &c.Models,
			&c.ModelMap, &c.Priority, &c.Weight, &c.Enabled, &c.DisabledReason, &c.CreatedAt, &c.UpdatedAt,
			&c.MaxConcurrency, &c.RPM, &c.TPM); err != nil {
			rows.Close()
			return nil, fmt.Errorf("scan channel: %w", err)
		}
		if len(sealed) > 0 {
			key, err := s.sealer.Open(sealed)
			if err != nil {
				c.KeyUnreadable = true
				if c.DisabledReason == "" {
					c.DisabledReason = unreadableReason
				}
			}
			c.APIKey = secret.Secret(key)
		}
		out = append(out, c)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list channels: %w", classify(err))
	}
	return out, nil
}

// unreadableReason is the DisabledReason shown for a channel whose key cannot be opened.
const unreadableReason = "upstream key cannot be decrypted with the configured encryption keys " +
	"(SLUICE_ENCRYPTION_KEY, SLUICE_ENCRYPTION_KEYS_OLD); the channel is skipped until the key that sealed it " +
	"is configured again or a new api_key is set"

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

func nonNilMap(m map[string]string) map[string]string {
	if m == nil {
		return map[string]string{}
	}
	return m
}
