package store_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/sluicehq/sluice/pkg/store"
	"github.com/sluicehq/sluice/pkg/store/storetest"
)

func createChannel(t *testing.T, st *store.Store, name, apiKey string) store.Channel {
	t.Helper()
	p := store.ChannelParams{Name: name, Provider: "openai", BaseURL: "https://api.example/v1",
		Models: []string{name + "-model"}, Weight: 1, Enabled: true}
	if apiKey != "" {
		sk := secretOf(apiKey)
		p.APIKey = &sk
	}
	ch, err := st.CreateChannel(t.Context(), p)
	if err != nil {
		t.Fatalf("CreateChannel: %v", err)
	}
	return ch
}

func setSealed(t *testing.T, db *storetest.Bundle, table, col, id string, v []byte) {
	t.Helper()
	// table and col are constants of this file, not input.
	if _, err := db.Pool.Exec(t.Context(), fmt.Sprintf(`UPDATE %s SET %s = $2 WHERE id = $1`, table, col), id, v); err != nil {
		t.Fatal(err)
	}
}

func sealedValue(t *testing.T, db *storetest.Bundle, table, col, id string) []byte {
	t.Helper()
	var v []byte
	if err := db.Pool.QueryRow(t.Context(), fmt.Sprintf(`SELECT %s FROM %s WHERE id = $1`, col, table), id).Scan(&v); err != nil {
		t.Fatal(err)
	}
	return v
}

// One unreadable value must not make loading every channel fail: that channel comes back
// flagged, with no key and a reason the admin sees, and the others load with their keys.
func TestChannelsOneUnreadableKey_Issue9_19(t *testing.T) {
	t.Parallel()
	db := storetest.New(t)
	ctx := t.Context()
	good := createChannel(t, db.Store, "good", "sk-good-0123456789")
	corrupt := createChannel(t, db.Store, "corrupt", "sk-corrupt-0123456789")
	foreign := createChannel(t, db.Store, "foreign", "sk-foreign-0123456789")
	keyless := createChannel(t, db.Store, "keyless", "")
	disabled := createChannel(t, db.Store, "disabled", "sk-disabled-0123456789")

	v := sealedValue(t, db, "channels", "api_key", corrupt.ID)
	v[len(v)-1] ^= 0xff // the GCM tag no longer matches
	setSealed(t, db, "channels", "api_key", corrupt.ID, v)
	setSealed(t, db, "channels", "api_key", foreign.ID, newSealer(t, newKeyB64(t)).Seal("sk-foreign-0123456789"))
	setSealed(t, db, "channels", "api_key", disabled.ID, []byte("not sealed at all"))
	if err := db.Store.DisableChannel(ctx, disabled.ID, "upstream rejected the key"); err != nil {
		t.Fatal(err)
	}

	chs, err := db.Store.Channels(ctx)
	if err != nil {
		t.Fatalf("Channels with unreadable keys among good ones: %v", err)
	}
	byID := map[string]store.Channel{}
	for _, c := range chs {
		byID[c.ID] = c
	}
	if len(byID) != 5 {
		t.Fatalf("Channels returned %d channels, want all 5", len(byID))
	}
	if c := byID[good.ID]; c.KeyUnreadable || c.APIKey.Reveal() != "sk-good-0123456789" || c.DisabledReason != "" {
		t.Errorf("good channel: unreadable=%v key ok=%v reason=%q", c.KeyUnreadable, c.APIKey.Reveal() == "sk-good-0123456789", c.DisabledReason)
	}
	if c := byID[keyless.ID]; c.KeyUnreadable || c.APIKey != "" {
		t.Errorf("channel without a key: unreadable=%v", c.KeyUnreadable)
	}
	for _, id := range []string{corrupt.ID, foreign.ID} {
		c := byID[id]
		if !c.KeyUnreadable || c.APIKey != "" || !c.Enabled || c.DisabledReason == "" {
			t.Errorf("channel %s: unreadable=%v key empty=%v enabled=%v reason=%q; want flagged, no key, still enabled in the database, a reason",
				c.Name, c.KeyUnreadable, c.APIKey == "", c.Enabled, c.DisabledReason)
		}
	}
	if c := byID[disabled.ID]; !c.KeyUnreadable || c.DisabledReason != "upstream rejected the key" {
		t.Errorf("disabled channel: unreadable=%v reason=%q; want flagged, its own reason kept", c.KeyUnreadable, c.DisabledReason)
	}
	// One channel by id reads the same way, and a new key makes it whole again.
	c, err := db.Store.Channel(ctx, corrupt.ID)
	if err != nil || !c.KeyUnreadable {
		t.Fatalf("Channel(corrupt) = unreadable %v, %v", c.KeyUnreadable, err)
	}
	sk := secretOf("sk-fresh-0123456789")
	c, err = db.Store.UpdateChannel(ctx, corrupt.ID, store.ChannelParams{Name: c.Name, Provider: c.Provider,
		BaseURL: c.BaseURL, APIKey: &sk, Models: c.Models, Weight: 1, Enabled: true})
	if err != nil || c.KeyUnreadable || c.APIKey.Reveal() != "sk-fresh-0123456789" || c.DisabledReason != "" {
		t.Errorf("after a new key: unreadable=%v reason=%q err=%v", c.KeyUnreadable, c.DisabledReason, err)
	}
}

// Reseal on real Postgres: values under the old key (with and without key ids) move to the
// new key in bounded batches, a corrupt one is reported and left alone, and a second run
// changes nothing.
func TestReseal_Issue9_19(t *testing.T) {
	t.Parallel()
	db := storetest.New(t) // its Store seals under db.EncryptionKey: the old key here
	ctx := t.Context()
	oldKey, nextKey := db.EncryptionKey, newKeyB64(t)

	var chans []store.Channel
	for i := range 7 {
		chans = append(chans, createChannel(t, db.Store, fmt.Sprintf("ch%d", i), fmt.Sprintf("sk-upstream-%d-0123456789", i)))
	}
	createChannel(t, db.Store, "keyless", "")
	// Two values from before key ids, one of them a webhook secret.
	setSealed(t, db, "channels", "api_key", chans[0].ID, legacySeal(t, oldKey, "sk-upstream-0-0123456789"))
	var keyIDs []string
	hooks := map[string]string{}
	for range 3 {
		k, sec := newKey(t, db.Store, store.KeyParams{Name: "k"})
		keyIDs = append(keyIDs, k.ID)
		hooks[k.ID] = sec.WebhookSecret.Reveal()
	}
	setSealed(t, db, "api_keys", "webhook_secret", keyIDs[1], legacySeal(t, oldKey, hooks[keyIDs[1]]))
	// One corrupt value, in the middle of a batch.
	setSealed(t, db, "channels", "api_key", chans[3].ID, []byte("garbage that no key opens, long enough to parse"))

	rotating := store.New(db.Pool, newSealer(t, nextKey, oldKey))
	// A value sealed while rotating is already under the new key.
	chans = append(chans, createChannel(t, rotating, "fresh", "sk-fresh-0123456789"))

	res, err := rotating.Reseal(ctx, 3)
	if err != nil {
		t.Fatalf("Reseal: %v", err)
	}
	want := store.ResealResult{Resealed: 7 - 1 + 3, Current: 1, Unreadable: []string{"channel " + chans[3].ID}}
	if diff := cmp.Diff(want, res); diff != "" {
		t.Errorf("first Reseal (-want +got):\n%s", diff)
	}

	// The new key alone now opens everything but the corrupt value.
	after := store.New(db.Pool, newSealer(t, nextKey))
	chs, err := after.Channels(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range chs {
		if c.ID == chans[3].ID {
			if !c.KeyUnreadable {
				t.Errorf("corrupt channel reads as readable")
			}
			continue
		}
		i := slices.IndexFunc(chans, func(x store.Channel) bool { return x.ID == c.ID })
		if c.KeyUnreadable || (i >= 0 && c.APIKey != chans[i].APIKey) {
			t.Errorf("channel %s after reseal: unreadable=%v key ok=%v", c.Name, c.KeyUnreadable, i >= 0 && c.APIKey == chans[i].APIKey)
		}
	}
	for _, id := range keyIDs {
		if ws, err := after.WebhookSecret(ctx, id); err != nil || ws.Reveal() != hooks[id] {
			t.Errorf("webhook secret of %s after reseal: ok=%v err=%v", id, ws.Reveal() == hooks[id], err)
		}
	}
	if _, err := after.Channel(ctx, chans[3].ID); err != nil {
		t.Errorf("Channel(corrupt) with the new key only: %v", err)
	}

	// Idempotent: a second run (even with a batch size that splits differently) rewrites nothing.
	before := sealedValue(t, db, "channels", "api_key", chans[1].ID)
	res, err = rotating.Reseal(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	want = store.ResealResult{Resealed: 0, Current: 7 - 1 + 1 + 3, Unreadable: []string{"channel " + chans[3].ID}}
	if diff := cmp.Diff(want, res); diff != "" {
		t.Errorf("second Reseal (-want +got):\n%s", diff)
	}
	if string(before) != string(sealedValue(t, db, "channels", "api_key", chans[1].ID)) {
		t.Error("second Reseal rewrote a value already under the current key")
	}
	// A cancelled context stops it with an error, not a panic or a partial silent success.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := rotating.Reseal(cctx, 2); !errors.Is(err, context.Canceled) {
		t.Errorf("Reseal with a cancelled context: err = %v, want context.Canceled", err)
	}
}
