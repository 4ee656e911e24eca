package store_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/sluicehq/sluice/pkg/secret"
	"github.com/sluicehq/sluice/pkg/store"
	"github.com/sluicehq/sluice/pkg/store/storetest"
)

// TestInputRejectionsArePermanent_Issue17_1: a value Postgres refuses (invalid UTF-8, NUL,
// an out-of-range number) comes back as ErrPermanent, the caller's fault, never as an error
// the ingress would answer with a 500 or a 503.
func TestInputRejectionsArePermanent_Issue17_1(t *testing.T) {
	t.Parallel()
	db := storetest.New(t)
	k, _ := newKey(t, db.Store, store.KeyParams{Name: "k"})
	key := secret.Secret("sk-test-123456")
	now := time.Now()
	tests := []struct {
		name string
		call func(context.Context) error
	}{
		{"key by invalid UTF-8 id", func(ctx context.Context) error { _, err := db.Store.KeyByID(ctx, "\xff"); return err }},
		{"revoke NUL id", func(ctx context.Context) error { _, err := db.Store.RevokeKey(ctx, "key_\x00"); return err }},
		{"key name with NUL", func(ctx context.Context) error {
			_, _, err := db.Store.CreateKey(ctx, store.KeyParams{Name: "a\x00b"})
			return err
		}},
		{"key model with NUL", func(ctx context.Context) error {
			_, err := db.Store.UpdateKey(ctx, k.ID, store.KeyParams{Name: "k", Models: []string{"m\x00"}})
			return err
		}},
		{"budget out of range", func(ctx context.Context) error {
			_, _, err := db.Store.CreateKey(ctx, store.KeyParams{Name: "k", BudgetUSD: ptr(1e30)})
			return err
		}},
		{"channel by invalid UTF-8 id", func(ctx context.Context) error {
			_, err := db.Store.Channel(ctx, "\xff\xfe")
			return err
		}},
		{"delete channel NUL id", func(ctx context.Context) error { return db.Store.DeleteChannel(ctx, "ch_\x00") }},
		{"channel base URL with NUL", func(ctx context.Context) error {
			_, err := db.Store.CreateChannel(ctx, store.ChannelParams{Name: "c", Provider: "fake", BaseURL: "fake://\x00",
				Models: []string{"m"}, APIKey: &key})
			return err
		}},
		{"channel model_map key with NUL", func(ctx context.Context) error {
			_, err := db.Store.CreateChannel(ctx, store.ChannelParams{Name: "c", Provider: "fake",
				ModelMap: map[string]string{"a\x00": "b"}})
			return err
		}},
		{"price out of range", func(ctx context.Context) error {
			return db.Store.SetPrice(ctx, store.Price{Model: "m", InputPerMTok: 1e30})
		}},
		{"usage of an invalid UTF-8 key id", func(ctx context.Context) error {
			_, err := db.Store.Usage(ctx, store.UsageFilter{KeyID: "\xff", From: now.Add(-time.Hour), To: now}, "model")
			return err
		}},
		{"job by NUL id", func(ctx context.Context) error { _, err := db.Store.Job(ctx, k.ID, "job_\x00"); return err }},
		{"cancel invalid UTF-8 id", func(ctx context.Context) error { _, err := db.Store.CancelJob(ctx, k.ID, "\xff"); return err }},
		{"list after invalid UTF-8", func(ctx context.Context) error {
			_, _, err := db.Store.ListJobs(ctx, k.ID, "", "job_\xff", 10)
			return err
		}},
		{"idempotency key invalid UTF-8", func(ctx context.Context) error {
			_, _, err := db.Store.CreateQueuedJob(ctx, store.NewJob{ID: "job_idem", KeyID: k.ID, Endpoint: "/v1/chat/completions",
				Model: "m", Async: true, CreatedAt: now, Deadline: now.Add(time.Minute)}, "\xff")
			return err
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := tt.call(t.Context())
			if !errors.Is(err, store.ErrPermanent) {
				t.Errorf("err = %v, want store.ErrPermanent", err)
			}
		})
	}
}
