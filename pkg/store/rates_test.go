package store_test

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluicehq/sluice/pkg/store"
	"github.com/sluicehq/sluice/pkg/store/storetest"
	"github.com/sluicehq/sluice/pkg/tokens"
)

// TestTakeRate_Issue15_1: concurrent admissions never push a window past its rpm or tpm; a
// settlement corrects the reserved estimate to the reported usage.
func TestTakeRate_Issue15_1(t *testing.T) {
	t.Parallel()
	db := storetest.New(t)
	ctx := t.Context()
	now := time.Date(2030, 1, 1, 12, 0, 5, 0, time.UTC)
	lim := store.RateLimits{RPM: ptr(1000), TPM: ptr(100)}
	var ok atomic.Int64
	var wg sync.WaitGroup
	for range 40 {
		wg.Go(func() {
			st, err := db.Store.TakeRate(ctx, "key_a", lim, 10, now)
			if err != nil {
				t.Error(err)
				return
			}
			if st.OK {
				ok.Add(1)
			} else if st.OverRPM || st.Wait < time.Second {
				t.Errorf("refusal %+v, want for tokens with a wait", st)
			}
		})
	}
	wg.Wait()
	if ok.Load() != 10 {
		t.Fatalf("%d admitted of 10 tokens each under tpm 100, want 10", ok.Load())
	}
	// rpm alone.
	for i := range 3 {
		st, err := db.Store.TakeRate(ctx, "key_b", store.RateLimits{RPM: ptr(2)}, 1, now)
		if err != nil || st.OK != (i < 2) || st.Requests != int64(min(i+1, 2)) {
			t.Fatalf("rpm call %d: %+v %v", i, st, err)
		}
		if i == 2 && !st.OverRPM {
			t.Errorf("refusal not for requests: %+v", st)
		}
	}
	// The previous minute still counts, weighted by its overlap: at 30s, half of it.
	half := now.Truncate(time.Minute).Add(90 * time.Second)
	st, err := db.Store.TakeRate(ctx, "key_a", lim, 10, half)
	if err != nil || !st.OK || st.Tokens != 60 {
		t.Fatalf("a minute on: %+v %v; want admitted with 50+10 tokens", st, err)
	}
	// Settlement of a job that reserved 10 and used 3 gives 7 back to the current window.
	k, _ := newKey(t, db.Store, store.KeyParams{Name: "tpm", TPM: ptr(100)})
	st, err = db.Store.TakeRate(ctx, k.ID, k.Rates(), 10, time.Now())
	if err != nil || !st.OK {
		t.Fatal(st, err)
	}
	j := store.NewJob{ID: "job_tpm_settle", KeyID: k.ID, Endpoint: "/v1/chat/completions", Model: "m",
		CreatedAt: time.Now(), Deadline: time.Now().Add(time.Minute), ReservedTokens: 10}
	if _, err := db.Store.FinishJob(ctx, store.Outcome{JobID: j.ID, Status: store.StatusSucceeded, StatusCode: 200,
		Usage: &tokens.Usage{PromptTokens: 2, CompletionTokens: 1}, Charge: true, Job: &j}); err != nil {
		t.Fatal(err)
	}
	var got int64
	if err := db.Pool.QueryRow(ctx, `SELECT sum(tokens) FROM rate_windows WHERE subject = $1`, k.ID).Scan(&got); err != nil {
		t.Fatal(err)
	}
	if got != 3 {
		t.Errorf("window after settlement holds %d tokens, want 3", got)
	}
}
