package store_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"

	"github.com/sluicehq/sluice/pkg/ids"
	"github.com/sluicehq/sluice/pkg/store"
	"github.com/sluicehq/sluice/pkg/store/storetest"
	"github.com/sluicehq/sluice/pkg/tokens"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("github.com/jackc/pgx/v5/pgxpool.(*Pool).backgroundHealthCheck"))
}

func ptr[T any](v T) *T { return &v }

func newKey(t *testing.T, st *store.Store, p store.KeyParams) (store.Key, store.NewKeySecrets) {
	t.Helper()
	k, sec, err := st.CreateKey(context.Background(), p)
	if err != nil {
		t.Fatalf("CreateKey: %v", err)
	}
	return k, sec
}

func TestKeys(t *testing.T) {
	t.Parallel()
	db := storetest.New(t)
	ctx := t.Context()
	k, sec := newKey(t, db.Store, store.KeyParams{Name: "ci", BudgetUSD: ptr(10.0), Models: []string{"gpt-4o-mini"}})

	got, err := db.Store.KeyBySecret(ctx, sec.Key.Reveal())
	if err != nil {
		t.Fatalf("KeyBySecret: %v", err)
	}
	if got.ID != k.ID || got.Name != "ci" || *got.BudgetUSD != 10 || !got.AllowsModel("gpt-4o-mini") || got.AllowsModel("o3") {
		t.Errorf("KeyBySecret = %+v, want the created key", got)
	}
	if _, err := db.Store.KeyBySecret(ctx, "sk-sl-unknown"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("unknown key: err = %v, want ErrNotFound", err)
	}
	ws, err := db.Store.WebhookSecret(ctx, k.ID)
	if err != nil || ws != sec.WebhookSecret {
		t.Errorf("WebhookSecret = %v, %v; want the secret returned at creation", ws == sec.WebhookSecret, err)
	}
	revoked, err := db.Store.RevokeKey(ctx, k.ID)
	if err != nil || revoked.Usable(time.Now()) {
		t.Errorf("RevokeKey: usable=%v err=%v, want revoked", revoked.Usable(time.Now()), err)
	}

	// Only the hash is stored: the secret appears nowhere in the row.
	var n int
	if err := db.Pool.QueryRow(ctx, `SELECT count(*) FROM api_keys WHERE position($1 in api_keys::text) > 0
		OR position($2 in api_keys::text) > 0`, sec.Key.Reveal(), sec.WebhookSecret.Reveal()).Scan(&n); err != nil || n != 0 {
		t.Errorf("rows holding a plaintext secret = %d (err %v), want 0", n, err)
	}
}

func startJob(t *testing.T, st *store.Store, keyID, model string) store.Job {
	t.Helper()
	now := time.Now()
	j, started, err := st.StartJob(context.Background(), store.NewJob{
		ID: ids.New("job"), KeyID: keyID, Endpoint: "/v1/chat/completions", Model: model,
		Request: json.RawMessage(`{"model":"` + model + `"}`), CreatedAt: now, Deadline: now.Add(time.Minute),
	})
	if err != nil || !started {
		t.Fatalf("StartJob: started=%v err=%v", started, err)
	}
	return j
}

func TestFinishJobChargesOnce(t *testing.T) {
	t.Parallel()
	db := storetest.New(t)
	ctx := t.Context()
	if err := db.Store.SetPrice(ctx, store.Price{Model: "m", InputPerMTok: 2.5, OutputPerMTok: 10}); err != nil {
		t.Fatal(err)
	}
	k, _ := newKey(t, db.Store, store.KeyParams{Name: "a"})
	j := startJob(t, db.Store, k.ID, "m")
	if j.Status != store.StatusRunning || j.Attempts != 1 {
		t.Fatalf("started job = %s attempts %d, want running 1", j.Status, j.Attempts)
	}
	out := store.Outcome{JobID: j.ID, Status: store.StatusSucceeded, StatusCode: 200,
		Response: json.RawMessage(`{"ok":true}`), Usage: &tokens.Usage{PromptTokens: 1000, CompletionTokens: 500}, Charge: true}

	// Sixteen racing deliveries of the same outcome: exactly one applies.
	var wg sync.WaitGroup
	var mu sync.Mutex
	applied := 0
	for range 16 {
		wg.Go(func() {
			f, err := db.Store.FinishJob(ctx, out)
			if err != nil {
				t.Errorf("FinishJob: %v", err)
				return
			}
			if cost := f.CostUSD; f.Applied {
				mu.Lock()
				applied++
				mu.Unlock()
				if want := (1000*2.5 + 500*10) / 1e6; cost != want {
					t.Errorf("cost = %v, want %v", cost, want)
				}
			}
		})
	}
	wg.Wait()
	if applied != 1 {
		t.Fatalf("FinishJob applied %d times, want 1", applied)
	}
	key, err := db.Store.KeyByID(ctx, k.ID)
	if err != nil {
		t.Fatal(err)
	}
	if key.SpentUSD != 0.0075 {
		t.Errorf("spent = %v, want 0.0075", key.SpentUSD)
	}
	var rows int
	if err := db.Pool.QueryRow(ctx, `SELECT count(*) FROM usage_ledger WHERE job_id = $1`, j.ID).Scan(&rows); err != nil || rows != 1 {
		t.Errorf("ledger rows = %d (err %v), want 1", rows, err)
	}

	// A redelivery that starts the finished job again is told it has finished.
	again, started, err := db.Store.StartJob(ctx, store.NewJob{ID: j.ID, KeyID: k.ID, Endpoint: j.Endpoint, Model: "m",
		CreatedAt: j.CreatedAt, Deadline: j.Deadline})
	if err != nil || started || again.Status != store.StatusSucceeded || string(again.Response) != `{"ok":true}` {
		t.Errorf("StartJob after finish = (%s, %s, started %v, %v), want the succeeded job, not started",
			again.Status, again.Response, started, err)
	}
}

func TestFinishJobWithoutChargeLeavesSpend(t *testing.T) {
	t.Parallel()
	db := storetest.New(t)
	ctx := t.Context()
	k, _ := newKey(t, db.Store, store.KeyParams{Name: "a"})
	j := startJob(t, db.Store, k.ID, "unpriced")
	f, err := db.Store.FinishJob(ctx, store.Outcome{JobID: j.ID, Status: store.StatusFailed, StatusCode: 400,
		Error: json.RawMessage(`{"message":"bad","type":"invalid_request_error"}`)})
	if err != nil || !f.Applied {
		t.Fatalf("FinishJob: applied=%v err=%v", f.Applied, err)
	}
	got, err := db.Store.Job(ctx, k.ID, j.ID)
	if err != nil || got.Status != store.StatusFailed || got.CostUSD != nil || *got.StatusCode != 400 {
		t.Errorf("job = %+v (err %v), want failed 400 with no cost", got, err)
	}
	if _, err := db.Store.Job(ctx, "key_other", j.ID); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Job for another key: err = %v, want ErrNotFound", err)
	}
}

func TestChannelKeySealed(t *testing.T) {
	t.Parallel()
	db := storetest.New(t)
	ctx := t.Context()
	upstreamKey := "sk-upstream-" + ids.Random(20)
	sk := secretOf(upstreamKey)
	ch, err := db.Store.CreateChannel(ctx, store.ChannelParams{Name: "oa", Provider: "openai",
		BaseURL: "https://api.openai.com/v1", APIKey: &sk, Models: []string{"gpt-4o-mini"}, Weight: 1, Enabled: true})
	if err != nil {
		t.Fatal(err)
	}
	if ch.APIKeyHint == upstreamKey || ch.APIKey.Reveal() != upstreamKey {
		t.Errorf("channel hint %q, want masked; key round trip ok=%v", ch.APIKeyHint, ch.APIKey.Reveal() == upstreamKey)
	}
	var n int
	if err := db.Pool.QueryRow(ctx, `SELECT count(*) FROM channels WHERE position($1 in channels::text) > 0
		OR position($1::bytea in api_key) > 0`, upstreamKey).Scan(&n); err != nil || n != 0 {
		t.Errorf("rows holding the plaintext upstream key = %d (err %v), want 0", n, err)
	}
}

func TestExpireOverdue(t *testing.T) {
	t.Parallel()
	db := storetest.New(t)
	ctx := t.Context()
	k, _ := newKey(t, db.Store, store.KeyParams{Name: "a"})
	past := time.Now().Add(-time.Hour)
	_, _, err := db.Store.CreateQueuedJob(ctx, store.NewJob{ID: ids.New("job"), KeyID: k.ID, Endpoint: "/v1/chat/completions",
		Model: "m", Request: json.RawMessage(`{}`), CreatedAt: past, Deadline: past.Add(time.Minute)}, "")
	if err != nil {
		t.Fatal(err)
	}
	live := startJob(t, db.Store, k.ID, "m")
	expired, err := db.Store.ExpireOverdue(ctx, time.Minute, json.RawMessage(`{"message":"No result within the job's deadline.","type":"timeout_error","code":"job_timeout"}`), nil)
	if err != nil || len(expired) != 1 || expired[0] == live.ID {
		t.Fatalf("ExpireOverdue = %v, %v; want the one overdue job", expired, err)
	}
}

// TestExpireOverdueSparesPendingOutcomes_Issue10: an overdue job whose outcome waits to be
// settled (Postgres was away longer than the sweep's grace) is not ended as timed out: its
// settler ends it with the real outcome.
func TestExpireOverdueSparesPendingOutcomes_Issue10(t *testing.T) {
	t.Parallel()
	db := storetest.New(t)
	ctx := t.Context()
	k, _ := newKey(t, db.Store, store.KeyParams{Name: "a"})
	past := time.Now().Add(-time.Hour)
	var jobIDs []string
	for range 2 {
		j, _, err := db.Store.CreateQueuedJob(ctx, store.NewJob{ID: ids.New("job"), KeyID: k.ID, Endpoint: "/v1/chat/completions",
			Model: "m", Request: json.RawMessage(`{}`), CreatedAt: past, Deadline: past.Add(time.Minute)}, "")
		if err != nil {
			t.Fatal(err)
		}
		jobIDs = append(jobIDs, j.ID)
	}
	pending := func(_ context.Context, id string) bool { return id == jobIDs[0] }
	expired, err := db.Store.ExpireOverdue(ctx, time.Minute, json.RawMessage(`{"message":"timeout"}`), pending)
	if err != nil || len(expired) != 1 || expired[0] != jobIDs[1] {
		t.Fatalf("ExpireOverdue = %v, %v; want only %s (%s has a pending outcome)", expired, err, jobIDs[1], jobIDs[0])
	}
	if fin, err := db.Store.FinishJob(ctx, store.Outcome{JobID: jobIDs[0], Status: store.StatusSucceeded, StatusCode: 200,
		Response: json.RawMessage(`{}`), Usage: &tokens.Usage{PromptTokens: 1, CompletionTokens: 1}, Charge: true}); err != nil || !fin.Applied {
		t.Fatalf("settling the spared job: %+v %v, want applied", fin, err)
	}
}

func TestDeleteFinishedBeforeKeepsLedger(t *testing.T) {
	t.Parallel()
	db := storetest.New(t)
	ctx := t.Context()
	k, _ := newKey(t, db.Store, store.KeyParams{Name: "a"})
	past := time.Now().Add(-40 * 24 * time.Hour)
	old, _, err := db.Store.StartJob(ctx, store.NewJob{ID: ids.NewAt("job", past), KeyID: k.ID, Endpoint: "/v1/chat/completions",
		Model: "m", CreatedAt: past, Deadline: past.Add(time.Minute)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Store.FinishJob(ctx, store.Outcome{JobID: old.ID, Status: store.StatusSucceeded, StatusCode: 200,
		Response: json.RawMessage(`{}`), Usage: &tokens.Usage{PromptTokens: 1, CompletionTokens: 1}, Charge: true}); err != nil {
		t.Fatal(err)
	}
	live := startJob(t, db.Store, k.ID, "m") // recent and unfinished: never deleted
	n, err := db.Store.DeleteFinishedBefore(ctx, time.Now().Add(-30*24*time.Hour), 100)
	if err != nil || n != 1 {
		t.Fatalf("DeleteFinishedBefore = %d, %v; want 1", n, err)
	}
	if _, err := db.Store.Job(ctx, k.ID, old.ID); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("old job still readable: %v", err)
	}
	if _, err := db.Store.Job(ctx, k.ID, live.ID); err != nil {
		t.Errorf("unfinished job deleted: %v", err)
	}
	var ledger int
	if err := db.Pool.QueryRow(ctx, `SELECT count(*) FROM usage_ledger WHERE job_id = $1`, old.ID).Scan(&ledger); err != nil || ledger != 1 {
		t.Errorf("ledger rows of the deleted job = %d (%v), want 1: the bill is kept", ledger, err)
	}
}

func TestFinishJobsBatchCreatesRowsOnce(t *testing.T) {
	t.Parallel()
	db := storetest.New(t)
	ctx := t.Context()
	if err := db.Store.SetPrice(ctx, store.Price{Model: "m", InputPerMTok: 1, OutputPerMTok: 1}); err != nil {
		t.Fatal(err)
	}
	k, _ := newKey(t, db.Store, store.KeyParams{Name: "a"})
	now := time.Now()
	var batch []store.Outcome
	for range 3 {
		id := ids.New("job")
		batch = append(batch, store.Outcome{JobID: id, Status: store.StatusSucceeded, StatusCode: 200,
			Response: json.RawMessage(`{"ok":1}`), Usage: &tokens.Usage{PromptTokens: 100, CompletionTokens: 50}, Charge: true,
			Job: &store.NewJob{ID: id, KeyID: k.ID, Endpoint: "/v1/chat/completions", Model: "m",
				Request: json.RawMessage(`{"model":"m"}`), CreatedAt: now, Deadline: now.Add(time.Minute), Attempt: 1}})
	}
	for round, wantApplied := range []bool{true, false} { // the second round is a redelivery
		fs, err := db.Store.FinishJobs(ctx, batch)
		if err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		for i, f := range fs {
			if f.Applied != wantApplied {
				t.Errorf("round %d job %d: applied %v, want %v", round, i, f.Applied, wantApplied)
			}
		}
	}
	key, _ := db.Store.KeyByID(ctx, k.ID)
	if want := 3 * 150.0 / 1e6; key.SpentUSD != want {
		t.Errorf("spent %v, want %v (three jobs, charged once each)", key.SpentUSD, want)
	}
	// A batch with an outcome Postgres rejects (a status its check constraint refuses) fails whole.
	bad := batch[0]
	bad.JobID, bad.Status = ids.New("job"), "bogus"
	bad.Job = &store.NewJob{ID: bad.JobID, KeyID: k.ID, Endpoint: "/v1/chat/completions", Model: "m",
		CreatedAt: now, Deadline: now.Add(time.Minute)}
	if _, err := db.Store.FinishJobs(ctx, []store.Outcome{batch[1], bad}); !errors.Is(err, store.ErrPermanent) {
		t.Errorf("batch with a bad outcome: err = %v, want ErrPermanent", err)
	}
}

func TestCreateQueuedJobsMatchesQueuedJob(t *testing.T) {
	t.Parallel()
	db := storetest.New(t)
	ctx := t.Context()
	k, _ := newKey(t, db.Store, store.KeyParams{Name: "a"})
	now := time.Now()
	var js []store.NewJob
	for i := range 3 {
		js = append(js, store.NewJob{ID: ids.New("job"), KeyID: k.ID, Endpoint: "/v1/chat/completions", Model: "m",
			Async: true, Request: json.RawMessage(`{"model":"m"}`), CreatedAt: now, Deadline: now.Add(time.Minute),
			Metadata: map[string]string{"i": fmt.Sprint(i)}, WebhookURL: map[bool]string{true: "https://example.com/h"}[i == 1]})
	}
	if err := db.Store.CreateQueuedJobs(ctx, js); err != nil {
		t.Fatal(err)
	}
	for i := range js {
		got, err := db.Store.Job(ctx, k.ID, js[i].ID)
		if err != nil {
			t.Fatal(err)
		}
		want := store.QueuedJob(&js[i])
		if diff := cmp.Diff(want, got, cmp.Comparer(func(a, b time.Time) bool { return a.Equal(b) })); diff != "" {
			t.Errorf("job %d: QueuedJob differs from the stored row (-want +got):\n%s", i, diff)
		}
	}
	// The batch is atomic: a duplicate id fails it whole.
	dup := []store.NewJob{js[0], {ID: ids.New("job"), KeyID: k.ID, Endpoint: "/v1/embeddings", Model: "m", CreatedAt: now,
		Deadline: now.Add(time.Minute)}}
	if err := db.Store.CreateQueuedJobs(ctx, dup); err == nil {
		t.Fatal("a batch with a duplicate id succeeded")
	}
	if _, err := db.Store.Job(ctx, k.ID, dup[1].ID); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("the other job of a failed batch was stored: %v", err)
	}
}

// TestStartJobsBatch: one statement starts queued async jobs and inserts unseen sync jobs,
// counts attempts, leaves a finished job as it is (started=false), and keeps metadata.
func TestStartJobsBatch(t *testing.T) {
	t.Parallel()
	db := storetest.New(t)
	ctx := t.Context()
	k, _ := newKey(t, db.Store, store.KeyParams{Name: "a"})
	now := time.Now()
	job := func(async bool) store.NewJob {
		return store.NewJob{ID: ids.New("job"), KeyID: k.ID, Endpoint: "/v1/chat/completions", Model: "m", Async: async,
			Request: json.RawMessage(`{"model":"m"}`), Metadata: map[string]string{"customer": "42"},
			CreatedAt: now, Deadline: now.Add(time.Minute), Attempt: 1}
	}
	queued, done, fresh := job(true), job(true), job(false)
	for _, j := range []store.NewJob{queued, done} {
		if err := db.Store.CreateQueuedJobs(ctx, []store.NewJob{j}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := db.Store.FinishJob(ctx, store.Outcome{JobID: done.ID, Status: store.StatusCanceled, StatusCode: 499,
		Error: json.RawMessage(`{"message":"x","type":"canceled"}`)}); err != nil {
		t.Fatal(err)
	}
	st, err := db.Store.StartJobs(ctx, []store.NewJob{queued, done, fresh})
	if err != nil {
		t.Fatal(err)
	}
	if len(st) != 3 {
		t.Fatalf("%d results, want 3", len(st))
	}
	for i, want := range []struct {
		id      string
		started bool
		status  string
	}{{queued.ID, true, store.StatusRunning}, {done.ID, false, store.StatusCanceled}, {fresh.ID, true, store.StatusRunning}} {
		got := st[i]
		if got.Job.ID != want.id || got.Started != want.started || got.Job.Status != want.status {
			t.Errorf("result %d: id %s started %v status %s; want %s %v %s", i, got.Job.ID, got.Started, got.Job.Status,
				want.id, want.started, want.status)
		}
	}
	if st[0].Job.Attempts != 1 || st[0].Job.StartedAt == nil || st[0].Job.Metadata["customer"] != "42" {
		t.Errorf("queued job after start: attempts %d started_at %v metadata %v", st[0].Job.Attempts, st[0].Job.StartedAt,
			st[0].Job.Metadata)
	}
	if st[2].Job.Metadata["customer"] != "42" || st[2].Job.Async {
		t.Errorf("inserted sync job: metadata %v async %v", st[2].Job.Metadata, st[2].Job.Async)
	}
	// A redelivery counts the attempt; the same job twice in one batch fails the batch whole.
	again := queued
	again.Attempt = 2
	if st, err := db.Store.StartJobs(ctx, []store.NewJob{again}); err != nil || !st[0].Started || st[0].Job.Attempts != 2 {
		t.Errorf("redelivery: %+v, %v; want started with attempts 2", st, err)
	}
	if _, err := db.Store.StartJobs(ctx, []store.NewJob{fresh, fresh}); err == nil {
		t.Error("the same job twice in one batch was accepted")
	}
}

// TestSpendCountsLegacyColumn: a key's spend is its shards plus what api_keys.spent_usd
// holds, which workers from before migration 0006 still add to during an upgrade.
func TestSpendCountsLegacyColumn(t *testing.T) {
	t.Parallel()
	db := storetest.New(t)
	ctx := t.Context()
	if err := db.Store.SetPrice(ctx, store.Price{Model: "m", InputPerMTok: 1, OutputPerMTok: 1}); err != nil {
		t.Fatal(err)
	}
	k, _ := newKey(t, db.Store, store.KeyParams{Name: "a"})
	if _, err := db.Pool.Exec(ctx, `UPDATE api_keys SET spent_usd = 1.5 WHERE id = $1`, k.ID); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	for range 3 { // three batches: each lands in some shard
		id := ids.New("job")
		if _, err := db.Store.FinishJob(ctx, store.Outcome{JobID: id, Status: store.StatusSucceeded, StatusCode: 200,
			Usage: &tokens.Usage{PromptTokens: 1_000_000, CompletionTokens: 0}, Charge: true,
			Job: &store.NewJob{ID: id, KeyID: k.ID, Endpoint: "/v1/chat/completions", Model: "m", CreatedAt: now,
				Deadline: now.Add(time.Minute), Attempt: 1}}); err != nil {
			t.Fatal(err)
		}
	}
	got, err := db.Store.KeyByID(ctx, k.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.SpentUSD != 4.5 {
		t.Errorf("spent %v, want 4.5 (1.5 in the legacy column + 3 jobs at $1)", got.SpentUSD)
	}
}

// TestListJobsLeavesBodiesOut_Issue9_7: a list page carries no response bodies (a page of
// 100 answers of up to 64 MiB each was built in one buffer); reading one job still does.
func TestListJobsLeavesBodiesOut_Issue9_7(t *testing.T) {
	t.Parallel()
	db := storetest.New(t)
	ctx := t.Context()
	k, _ := newKey(t, db.Store, store.KeyParams{Name: "a"})
	j := startJob(t, db.Store, k.ID, "m")
	big := json.RawMessage(`{"answer":"` + strings.Repeat("x", 1<<20) + `"}`)
	if _, err := db.Store.FinishJob(ctx, store.Outcome{JobID: j.ID, Status: store.StatusSucceeded, StatusCode: 200,
		Response: big}); err != nil {
		t.Fatal(err)
	}
	rows, _, err := db.Store.ListJobs(ctx, k.ID, "", "", 10)
	if err != nil || len(rows) != 1 {
		t.Fatalf("ListJobs = %d rows, %v", len(rows), err)
	}
	if rows[0].Response != nil || rows[0].Status != store.StatusSucceeded {
		t.Errorf("listed job: status %s, %d response bytes; want succeeded without its body", rows[0].Status, len(rows[0].Response))
	}
	one, err := db.Store.Job(ctx, k.ID, j.ID)
	if err != nil || len(one.Response) != len(big) {
		t.Errorf("Job = %d response bytes (%v), want the whole %d", len(one.Response), err, len(big))
	}
}

// TestRetentionKeepsPace_Issue9_10: retention deletes old finished jobs in batches until none
// is left (it deleted 1,000 a minute, while a worker settles thousands a second), keeps the
// unfinished and the recent, shares the work between concurrent sweepers without deleting a
// row twice, and prunes Idempotency-Key bindings older than 24 h. It logs the rate.
func TestRetentionKeepsPace_Issue9_10(t *testing.T) {
	t.Parallel()
	db := storetest.New(t)
	ctx := t.Context()
	const old = 50_000
	old30 := time.Now().Add(-31 * 24 * time.Hour)
	// Old finished jobs, with ids of their (old) creation time, as the worker writes them.
	if _, err := db.Pool.Exec(ctx, `INSERT INTO jobs (id, key_id, endpoint, model, status, created_at, finished_at, deadline)
		SELECT $1 || lpad(g::text, 8, '0'), 'key_x', '/v1/chat/completions', 'm', 'succeeded', $2, $2, $2
		FROM generate_series(1, $3) g`, ids.NewAt("job", old30)[:20], old30, old); err != nil {
		t.Fatal(err)
	}
	unfinished := ids.NewAt("job", old30)
	recent := ids.New("job")
	if _, err := db.Pool.Exec(ctx, `INSERT INTO jobs (id, key_id, endpoint, model, status, created_at, finished_at, deadline)
		VALUES ($1, 'key_x', '/v1/chat/completions', 'm', 'running', $3, NULL, $3),
		       ($2, 'key_x', '/v1/chat/completions', 'm', 'succeeded', now(), now(), now())`, unfinished, recent, old30); err != nil {
		t.Fatal(err)
	}
	k, _ := newKey(t, db.Store, store.KeyParams{Name: "idem"})
	if _, err := db.Pool.Exec(ctx, `INSERT INTO idempotency_keys (key_id, idem_key, job_id, created_at)
		SELECT $1, 'old-' || g, 'job_x', now() - interval '25 hours' FROM generate_series(1, 3000) g
		UNION ALL SELECT $1, 'fresh', 'job_y', now()`, k.ID); err != nil {
		t.Fatal(err)
	}

	began := time.Now()
	cutoff := time.Now().Add(-30 * 24 * time.Hour)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var total int64
	for range 2 { // two workers' sweepers at once
		wg.Go(func() {
			n, err := store.Prune(ctx, time.Minute, 5000, func(ctx context.Context, batch int) (int64, error) {
				return db.Store.DeleteFinishedBefore(ctx, cutoff, batch)
			})
			if err != nil {
				t.Errorf("prune: %v", err)
			}
			mu.Lock()
			total += n
			mu.Unlock()
		})
	}
	wg.Wait()
	el := time.Since(began)
	t.Logf("deleted %d old jobs in %s (%.0f jobs/s) with two sweepers", total, el, float64(total)/el.Seconds())
	var left int
	if err := db.Pool.QueryRow(ctx, `SELECT count(*) FROM jobs`).Scan(&left); err != nil {
		t.Fatal(err)
	}
	if total != old || left != 2 {
		t.Errorf("deleted %d (want %d, each once), %d rows left (want the unfinished and the recent job)", total, old, left)
	}
	n, err := store.Prune(ctx, time.Minute, 1000, func(ctx context.Context, batch int) (int64, error) {
		return db.Store.DeleteIdempotencyKeysBefore(ctx, time.Now().Add(-24*time.Hour), batch)
	})
	if err != nil || n != 3000 {
		t.Errorf("pruned %d idempotency keys (%v), want the 3000 older than 24 h", n, err)
	}
}

// TestUnpricedModel_Issue9_4: a job is priced by the upstream model it was sent as, then by
// its alias, and a model with no price at all is charged the configured unpriced price, never
// a silent $0.
func TestUnpricedModel_Issue9_4(t *testing.T) {
	t.Parallel()
	db := storetest.New(t)
	ctx := t.Context()
	db.Store.SetUnpricedPrice(10, 30)
	for _, p := range []store.Price{{Model: "alias", InputPerMTok: 1, OutputPerMTok: 1}, {Model: "upstream-model", InputPerMTok: 2, OutputPerMTok: 4}} {
		if err := db.Store.SetPrice(ctx, p); err != nil {
			t.Fatal(err)
		}
	}
	k, _ := newKey(t, db.Store, store.KeyParams{Name: "a"})
	usage := &tokens.Usage{PromptTokens: 1_000_000, CompletionTokens: 1_000_000}
	tests := []struct {
		name, model, upstream string
		want                  float64
	}{
		{"upstream model priced", "alias", "upstream-model", 2 + 4},
		{"only the alias priced", "alias", "not-in-the-table", 1 + 1},
		{"nothing priced", "mystery", "mystery-upstream", 10 + 30},
	}
	for _, tt := range tests {
		j := startJob(t, db.Store, k.ID, tt.model)
		f, err := db.Store.FinishJob(ctx, store.Outcome{JobID: j.ID, Status: store.StatusSucceeded, StatusCode: 200,
			Response: json.RawMessage(`{}`), Usage: usage, Charge: true, UpstreamModel: tt.upstream})
		if err != nil {
			t.Fatal(err)
		}
		if f.CostUSD != tt.want {
			t.Errorf("%s: cost %v, want %v", tt.name, f.CostUSD, tt.want)
		}
	}
}
