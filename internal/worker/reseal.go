package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/sluicehq/sluice/pkg/store"
)

// ErrUnreadable means Reseal found values that no configured key opens: rotation is not
// complete, and the old key must not be dropped yet.
var ErrUnreadable = errors.New("some sealed values cannot be opened with the configured keys")

// Reseal re-encrypts every sealed value in the database under cfg.EncryptionKey, opening
// old values with cfg.EncryptionKeysOld too, batch rows per transaction (`worker reseal`).
// It is idempotent. It returns the counts and an error wrapping ErrUnreadable if some values
// could not be opened (each is logged by its row id, never its content; the others are
// resealed), or another error if the keys are invalid or Postgres fails.
func Reseal(ctx context.Context, cfg Config, batch int, log *slog.Logger) (store.ResealResult, error) {
	sealer, err := store.NewSealer(cfg.EncryptionKey.Reveal(), cfg.EncryptionKeysOld.Reveal()...)
	if err != nil {
		return store.ResealResult{}, fmt.Errorf("SLUICE_ENCRYPTION_KEY / SLUICE_ENCRYPTION_KEYS_OLD: %w", err)
	}
	pool, err := store.NewPool(ctx, cfg.DatabaseURL.Reveal(), 2, "sluice-reseal")
	if err != nil {
		return store.ResealResult{}, err
	}
	defer pool.Close()
	log.InfoContext(ctx, "resealing", "key_id", sealer.KeyID(), "old_keys", len(cfg.EncryptionKeysOld), "batch", batch)
	res, err := store.New(pool, sealer).Reseal(ctx, batch)
	if err != nil {
		return res, err
	}
	for _, row := range res.Unreadable {
		log.ErrorContext(ctx, "sealed value cannot be opened with the configured keys", "row", row)
	}
	log.InfoContext(ctx, "resealed", "resealed", res.Resealed, "already_current", res.Current, "unreadable", len(res.Unreadable))
	if len(res.Unreadable) > 0 {
		return res, fmt.Errorf("%w: %d (see the log)", ErrUnreadable, len(res.Unreadable))
	}
	return res, nil
}
