package store_test

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/sluicehq/sluice/pkg/ids"
	"github.com/sluicehq/sluice/pkg/store"
	"github.com/sluicehq/sluice/pkg/store/storetest"
	"github.com/sluicehq/sluice/pkg/tokens"
)

// queueJob creates a queued async job with webhook URL hook ("" for none).
func queueJob(t *testing.T, st *store.Store, keyID, hook string, deadline time.Time) store.Job {
	t.Helper()
	now := time.Now()
	j, created, err := st.CreateQueuedJob(context.Background(), store.NewJob{ID: ids.New("job"), KeyID: keyID,
		Endpoint: "/v1/chat/completions", Model: "m", Request: json.RawMessage(`{"model":"m"}`), WebhookURL: hook,
		CreatedAt: now, Deadline: deadline}, "")
	if err != nil || !created {
		t.Fatalf("CreateQueuedJob: created=%v err=%v", created, err)
	}
	return j
}

// deliveryRow is a webhook_deliveries row as the tests inspect it.
type deliveryRow struct {
	keyID, url             string
	attempts               int
	lastStatus             *int
	lastError              *string
	delivered, gaveUp, due bool
}

func deliveries(t *testing.T, db *storetest.Bundle, jobID string) []deliveryRow {
	t.Helper()
	rows, err := db.Pool.Query(context.Background(), `SELECT key_id, url, attempts, last_status, last_error,
		delivered_at IS NOT NULL, gave_up_at IS NOT NULL, next_attempt_at <= now()
		FROM webhook_deliveries WHERE job_id = $1`, jobID)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []deliveryRow
	for rows.Next() {
		var r deliveryRow
		if err := rows.Scan(&r.keyID, &r.url, &r.attempts, &r.lastStatus, &r.lastError, &r.delivered, &r.gaveUp, &r.due); err != nil {
			t.Fatal(err)
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestWebhookDeliveryCreatedWhenJobEnds(t *testing.T) {
	t.Parallel()
	const hook = "https://example.com/hooks/sluice"
	future := func() time.Time { return time.Now().Add(time.Hour) }
	tests := []struct {
		name  string
		hook  string
		end   func(t *testing.T, db *storetest.Bundle, j store.Job) // ends the job, twice where it can
		wantN int
	}{
		{"worker finishes it", hook, func(t *testing.T, db *storetest.Bundle, j store.Job) {
			if _, started, err := db.Store.StartJob(t.Context(), store.NewJob{ID: j.ID, KeyID: j.KeyID, Endpoint: j.Endpoint,
				Model: j.Model, Async: true, CreatedAt: j.CreatedAt, Deadline: j.Deadline}); err != nil || !started {
				t.Fatalf("StartJob: started=%v err=%v", started, err)
			}
			for range 2 { // a redelivery finishes it again: still one delivery
				if _, err := db.Store.FinishJob(t.Context(), store.Outcome{JobID: j.ID, Status: store.StatusSucceeded,
					StatusCode: 200, Response: json.RawMessage(`{"ok":true}`),
					Usage: &tokens.Usage{PromptTokens: 3, CompletionTokens: 4}, Charge: true}); err != nil {
					t.Fatalf("FinishJob: %v", err)
				}
			}
		}, 1},
		{"cancelled while queued", hook, func(t *testing.T, db *storetest.Bundle, j store.Job) {
			for range 2 {
				if got, err := db.Store.CancelJob(t.Context(), j.KeyID, j.ID); err != nil || got.Status != store.StatusCanceled {
					t.Fatalf("CancelJob = %s, %v; want canceled", got.Status, err)
				}
			}
		}, 1},
		{"expired by the sweeper", hook, func(t *testing.T, db *storetest.Bundle, j store.Job) {
			if _, err := db.Pool.Exec(t.Context(), `UPDATE jobs SET deadline = now() - interval '1 hour' WHERE id = $1`, j.ID); err != nil {
				t.Fatal(err)
			}
			if ended, err := db.Store.ExpireOverdue(t.Context(), time.Minute, json.RawMessage(`{"message":"No result within the job's deadline.","type":"timeout_error","code":"job_timeout"}`), nil); err != nil || len(ended) != 1 {
				t.Fatalf("ExpireOverdue = %v, %v; want the job", ended, err)
			}
		}, 1},
		{"running, not yet ended", hook, func(t *testing.T, db *storetest.Bundle, j store.Job) {
			if _, started, err := db.Store.StartJob(t.Context(), store.NewJob{ID: j.ID, KeyID: j.KeyID, Endpoint: j.Endpoint,
				Model: j.Model, Async: true, CreatedAt: j.CreatedAt, Deadline: j.Deadline}); err != nil || !started {
				t.Fatalf("StartJob: started=%v err=%v", started, err)
			}
		}, 0},
		{"no webhook", "", func(t *testing.T, db *storetest.Bundle, j store.Job) {
			if _, err := db.Store.FinishJob(t.Context(), store.Outcome{JobID: j.ID, Status: store.StatusFailed,
				StatusCode: 400, Error: json.RawMessage(`{"message":"bad","type":"invalid_request_error"}`)}); err != nil {
				t.Fatalf("FinishJob: %v", err)
			}
		}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			db := storetest.New(t)
			k, _ := newKey(t, db.Store, store.KeyParams{Name: "a"})
			j := queueJob(t, db.Store, k.ID, tt.hook, future())
			tt.end(t, db, j)
			got := deliveries(t, db, j.ID)
			if len(got) != tt.wantN {
				t.Fatalf("deliveries = %d, want %d", len(got), tt.wantN)
			}
			if tt.wantN == 1 {
				if d := got[0]; d.keyID != k.ID || d.url != hook || d.attempts != 0 || !d.due || d.delivered || d.gaveUp {
					t.Errorf("delivery = %+v, want a due, unattempted delivery to %s for %s", d, hook, k.ID)
				}
			}
		})
	}
}

// finishedWithWebhook makes n jobs of keyID that have ended and so have a due delivery.
func finishedWithWebhook(t *testing.T, st *store.Store, keyID string, n int) map[string]bool {
	t.Helper()
	out := map[string]bool{}
	for range n {
		j := queueJob(t, st, keyID, "https://example.com/h", time.Now().Add(time.Hour))
		if _, err := st.CancelJob(t.Context(), keyID, j.ID); err != nil {
			t.Fatal(err)
		}
		out[j.ID] = true
	}
	return out
}

func TestClaimDeliveriesConcurrentClaimersNeverShare(t *testing.T) {
	t.Parallel()
	db := storetest.New(t)
	k, sec := newKey(t, db.Store, store.KeyParams{Name: "a"})
	want := finishedWithWebhook(t, db.Store, k.ID, 40)

	var mu sync.Mutex
	seen := map[string]int{}
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for {
				got, err := db.Store.ClaimDeliveries(t.Context(), store.DeliveryClaim{Limit: 3, Lease: time.Hour})
				if err != nil {
					t.Errorf("ClaimDeliveries: %v", err)
					return
				}
				if len(got) == 0 {
					return // the rest is claimed, or locked by a claimer that will take it
				}
				mu.Lock()
				for _, d := range got {
					seen[d.Job.ID]++
					if d.Attempt != 1 || d.Secret != sec.WebhookSecret || d.URL != "https://example.com/h" ||
						d.Job.KeyID != k.ID || d.Job.Status != store.StatusCanceled || d.CreatedAt.IsZero() {
						t.Errorf("delivery %s: attempt %d, url %q, status %s, secret ok %v; want attempt 1 of a canceled job",
							d.Job.ID, d.Attempt, d.URL, d.Job.Status, d.Secret == sec.WebhookSecret)
					}
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	for id, n := range seen {
		if n != 1 || !want[id] {
			t.Errorf("job %s claimed %d times (ours: %v), want once", id, n, want[id])
		}
	}
	if len(seen) != len(want) {
		t.Errorf("claimed %d deliveries, want %d", len(seen), len(want))
	}
	if got, err := db.Store.ClaimDeliveries(t.Context(), store.DeliveryClaim{Limit: 100, Lease: time.Hour}); err != nil || len(got) != 0 {
		t.Errorf("claim within the lease = %d deliveries (err %v), want none", len(got), err)
	}
}

func TestDeliveryLeaseRetryAndDelivered(t *testing.T) {
	t.Parallel()
	db := storetest.New(t)
	ctx := t.Context()
	k, _ := newKey(t, db.Store, store.KeyParams{Name: "a"})
	var jobID string
	for id := range finishedWithWebhook(t, db.Store, k.ID, 1) {
		jobID = id
	}
	claim := func(wantN int) []store.Delivery {
		t.Helper()
		got, err := db.Store.ClaimDeliveries(ctx, store.DeliveryClaim{Limit: 10, Lease: time.Hour})
		if err != nil || len(got) != wantN {
			t.Fatalf("ClaimDeliveries = %d deliveries (err %v), want %d", len(got), err, wantN)
		}
		return got
	}
	claim(1)
	claim(0) // leased
	// The dispatcher holding attempt 1 died: its lease runs out and the delivery comes back.
	if _, err := db.Pool.Exec(ctx, `UPDATE webhook_deliveries SET next_attempt_at = now() WHERE job_id = $1`, jobID); err != nil {
		t.Fatal(err)
	}
	if d := claim(1)[0]; d.Attempt != 2 {
		t.Fatalf("reclaimed attempt = %d, want 2", d.Attempt)
	}
	// The dead dispatcher's late result must not reschedule the live attempt.
	if err := db.Store.MarkFailed(ctx, jobID, 1, 500, "late", time.Now()); !errors.Is(err, store.ErrStaleAttempt) {
		t.Errorf("MarkFailed for a stale attempt: err = %v, want ErrStaleAttempt", err)
	}
	claim(0)
	if err := db.Store.MarkFailed(ctx, jobID, 2, 503, "receiver answered HTTP 503", time.Now().Add(-time.Second)); err != nil {
		t.Fatalf("MarkFailed: %v", err)
	}
	if d := deliveries(t, db, jobID)[0]; d.lastStatus == nil || *d.lastStatus != 503 || *d.lastError != "receiver answered HTTP 503" {
		t.Errorf("after MarkFailed: %+v, want last status 503 and its error", d)
	}
	if d := claim(1)[0]; d.Attempt != 3 {
		t.Fatalf("retry attempt = %d, want 3", d.Attempt)
	}
	if err := db.Store.MarkFailed(ctx, jobID, 3, 0, "connection refused", time.Now().Add(time.Hour)); err != nil {
		t.Fatalf("MarkFailed without a status: %v", err)
	}
	if d := deliveries(t, db, jobID)[0]; d.lastStatus != nil || d.due {
		t.Errorf("after a network failure: %+v, want no status and not due", d)
	}
	if err := db.Store.MarkDelivered(ctx, jobID, 204); err != nil {
		t.Fatalf("MarkDelivered: %v", err)
	}
	if d := deliveries(t, db, jobID)[0]; !d.delivered || *d.lastStatus != 204 || d.lastError != nil || d.attempts != 3 {
		t.Errorf("after MarkDelivered: %+v, want delivered with 204 after 3 attempts", d)
	}
	if _, err := db.Pool.Exec(ctx, `UPDATE webhook_deliveries SET next_attempt_at = now() WHERE job_id = $1`, jobID); err != nil {
		t.Fatal(err)
	}
	claim(0) // delivered deliveries are never claimed again
	if err := db.Store.MarkFailed(ctx, jobID, 3, 500, "x", time.Now()); !errors.Is(err, store.ErrStaleAttempt) {
		t.Errorf("MarkFailed after delivery: err = %v, want ErrStaleAttempt", err)
	}
}

func TestDeliveryGiveUp(t *testing.T) {
	t.Parallel()
	db := storetest.New(t)
	ctx := t.Context()
	k, _ := newKey(t, db.Store, store.KeyParams{Name: "a"})
	var jobID string
	for id := range finishedWithWebhook(t, db.Store, k.ID, 1) {
		jobID = id
	}
	got, err := db.Store.ClaimDeliveries(ctx, store.DeliveryClaim{Limit: 1, Lease: time.Hour})
	if err != nil || len(got) != 1 {
		t.Fatalf("ClaimDeliveries = %d, %v; want 1", len(got), err)
	}
	if err := db.Store.GiveUp(ctx, jobID, got[0].Attempt, 410, "receiver answered HTTP 410"); err != nil {
		t.Fatalf("GiveUp: %v", err)
	}
	if err := db.Store.GiveUp(ctx, jobID, got[0].Attempt, 410, "again"); !errors.Is(err, store.ErrStaleAttempt) {
		t.Errorf("second GiveUp: err = %v, want ErrStaleAttempt", err)
	}
	d := deliveries(t, db, jobID)[0]
	if !d.gaveUp || d.delivered || *d.lastStatus != 410 || *d.lastError != "receiver answered HTTP 410" {
		t.Errorf("after GiveUp: %+v, want given up with 410", d)
	}
	if _, err := db.Pool.Exec(ctx, `UPDATE webhook_deliveries SET next_attempt_at = now() WHERE job_id = $1`, jobID); err != nil {
		t.Fatal(err)
	}
	if got, err := db.Store.ClaimDeliveries(ctx, store.DeliveryClaim{Limit: 10, Lease: time.Hour}); err != nil || len(got) != 0 {
		t.Errorf("claim after give-up = %d (err %v), want none", len(got), err)
	}
}

func TestRetentionRemovesDeliveries(t *testing.T) {
	t.Parallel()
	db := storetest.New(t)
	k, _ := newKey(t, db.Store, store.KeyParams{Name: "a"})
	finishedWithWebhook(t, db.Store, k.ID, 2)
	if n, err := db.Store.DeleteFinishedBefore(t.Context(), time.Now().Add(time.Minute), 100); err != nil || n != 2 {
		t.Fatalf("DeleteFinishedBefore = %d, %v; want 2", n, err)
	}
	var n int
	if err := db.Pool.QueryRow(t.Context(), `SELECT count(*) FROM webhook_deliveries`).Scan(&n); err != nil || n != 0 {
		t.Errorf("deliveries left = %d (err %v), want 0", n, err)
	}
}

// TestClaimDeliveriesFairByKey_Issue9_9: a claim takes every key's oldest due delivery
// before any key's second, and never more of one key than the cap less what the caller
// already has in flight, however many of that key's deliveries are older.
func TestClaimDeliveriesFairByKey_Issue9_9(t *testing.T) {
	t.Parallel()
	db := storetest.New(t)
	a, _ := newKey(t, db.Store, store.KeyParams{Name: "a"})
	b, _ := newKey(t, db.Store, store.KeyParams{Name: "b"})
	c, _ := newKey(t, db.Store, store.KeyParams{Name: "c"})
	finishedWithWebhook(t, db.Store, a.ID, 10) // a's backlog is the oldest
	finishedWithWebhook(t, db.Store, b.ID, 3)
	finishedWithWebhook(t, db.Store, c.ID, 1)
	claim := func(cl store.DeliveryClaim) map[string]int {
		t.Helper()
		cl.Lease = time.Hour
		got, err := db.Store.ClaimDeliveries(t.Context(), cl)
		if err != nil {
			t.Fatal(err)
		}
		n := map[string]int{}
		for _, d := range got {
			n[d.Job.KeyID]++
		}
		return n
	}
	if got := claim(store.DeliveryClaim{Limit: 4, PerKey: 2}); got[a.ID] != 2 || got[b.ID] != 1 || got[c.ID] != 1 {
		t.Errorf("first claim of 4 took a:%d b:%d c:%d, want 2, 1, 1 (one of each key, then a's second)",
			got[a.ID], got[b.ID], got[c.ID])
	}
	// a has its 2 in flight: it gets nothing more, b gets up to its cap.
	if got := claim(store.DeliveryClaim{Limit: 8, PerKey: 2, Busy: map[string]int{a.ID: 2, b.ID: 1}}); got[a.ID] != 0 || got[b.ID] != 1 || len(got) != 1 {
		t.Errorf("claim with a at its cap took %v, want b's one more (b has 1 of 2 in flight)", got)
	}
	// Without a cap, one claim is still round robin: 2 of a, b's last one.
	if got := claim(store.DeliveryClaim{Limit: 3}); got[a.ID] != 2 || got[b.ID] != 1 {
		t.Errorf("uncapped claim of 3 took %v, want 2 of a and b's last", got)
	}
}
