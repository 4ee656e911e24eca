package batches_test

import (
	"context"
	"testing"
	"time"

	"github.com/sluicehq/sluice/pkg/batches"
	"github.com/sluicehq/sluice/pkg/ids"
	"github.com/sluicehq/sluice/pkg/jobs"
	"github.com/sluicehq/sluice/pkg/store"
	"github.com/sluicehq/sluice/pkg/store/storetest"
	"github.com/sluicehq/sluice/pkg/tokens"
)

// TestBatchLineRows_Issue12_2: a batch line's row counts once it has ended (a redelivered
// line reads running until then), lines never run are ended by EndMissing without touching
// the ones that ran, and the retention sweep (by job id) keeps a fresh batch's rows.
func TestBatchLineRows_Issue12_2(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := storetest.New(t)
	bs := batches.New(db.Pool)
	now := time.Now()
	b, err := bs.Create(ctx, batches.Batch{ID: ids.New("batch"), KeyID: "key_1", Kind: batches.KindOpenAI,
		Endpoint: jobs.EndpointChat, InputFileID: "file-1", ExpiresAt: now.Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	line := func(n int) store.NewJob {
		j := jobs.Job{ID: jobs.BatchLineID(b.ID, n), KeyID: b.KeyID, Endpoint: b.Endpoint, Model: "m", CreatedAt: now,
			Deadline: b.ExpiresAt, Batch: b.ID, Line: n, CustomID: "c"}
		return j.Row(1)
	}
	l0, l1 := line(0), line(1)
	if _, err := db.Store.FinishJobs(ctx, []store.Outcome{{JobID: l0.ID, Status: store.StatusSucceeded, StatusCode: 200,
		Response: []byte(`{}`), Usage: &tokens.Usage{PromptTokens: 1, CompletionTokens: 2}, Charge: true, Job: &l0}}); err != nil {
		t.Fatal(err)
	}
	l1.Attempt = 2
	if _, err := db.Store.StartJobs(ctx, []store.NewJob{l1}); err != nil { // a redelivery: running
		t.Fatal(err)
	}
	c, err := bs.LineCounts(ctx, b.ID)
	if err != nil || c.Done != 1 || c.Succeeded != 1 {
		t.Fatalf("counts %+v (err %v), want the one ended line", c, err)
	}
	if err := bs.EndMissing(ctx, &b, 0, 3, store.StatusCanceled, 499, []byte(`{"code":"batch_cancelled"}`)); err != nil {
		t.Fatal(err)
	}
	c, _ = bs.LineCounts(ctx, b.ID)
	if c.Done != 2 || c.Succeeded != 1 || c.Canceled != 1 {
		t.Errorf("after EndMissing: %+v, want line 2 canceled, line 0 as it was, line 1 still running", c)
	}
	if n, err := db.Store.DeleteFinishedBefore(ctx, now.Add(-time.Hour), 100); err != nil || n != 0 {
		t.Errorf("retention deleted %d rows of a fresh batch (err %v)", n, err)
	}
	ls, err := bs.Lines(ctx, b.ID, 0, 10)
	if err != nil || len(ls) != 2 || ls[0].N != 0 || ls[1].N != 2 || ls[0].JobID != l0.ID {
		t.Errorf("lines %+v (err %v)", ls, err)
	}
}
