package e2e

import (
	"bytes"
	"context"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	"github.com/sluicehq/sluice/pkg/providers/providertest"
)

// newBatch uploads an n-line chat batch for model and creates it.
func newBatch(t *testing.T, c openai.Client, n int, model string) *openai.Batch {
	t.Helper()
	ctx := context.Background()
	f, err := c.Files.New(ctx, openai.FileNewParams{File: openai.File(bytes.NewReader(batchInput(n, model)), "in.jsonl",
		"application/jsonl"), Purpose: openai.FilePurposeBatch})
	if err != nil {
		t.Fatal(err)
	}
	b, err := c.Batches.New(ctx, openai.BatchNewParams{InputFileID: f.ID, Endpoint: openai.BatchNewParamsEndpointV1ChatCompletions,
		CompletionWindow: openai.BatchNewParamsCompletionWindow24h})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// checkBatchLedger checks that key's ledger has one row per output line and as many tokens
// as the upstream reported, and that every input line appears once across both files.
func checkBatchLedger(t *testing.T, s *stack, keyID string, outs, errs []outLine, n int) (ledgerRows int64) {
	t.Helper()
	seen := map[string]int{}
	for _, l := range append(append([]outLine(nil), outs...), errs...) {
		seen[l.CustomID]++
	}
	for id, k := range seen {
		if k != 1 || !strings.HasPrefix(id, "req-") {
			t.Errorf("custom_id %q appears %d times", id, k)
		}
	}
	if len(seen) != n {
		t.Errorf("%d distinct lines in the output and error files, want %d", len(seen), n)
	}
	if err := s.db.Pool.QueryRow(context.Background(), `SELECT count(*) FROM usage_ledger l JOIN jobs j ON j.id = l.job_id
		WHERE l.key_id = $1 AND j.status = 'succeeded'`, keyID).Scan(&ledgerRows); err != nil {
		t.Fatal(err)
	}
	if ledgerRows != int64(len(outs)) {
		t.Errorf("%d ledger rows of succeeded lines, want one per output line (%d)", ledgerRows, len(outs))
	}
	return ledgerRows
}

// TestBatchCancel_Issue12_2: a cancel mid-batch reads cancelling, lets the lines running at
// the cancel finish (charged), ends every other line batch_cancelled without calling
// upstream, and ends cancelled with partial output.
func TestBatchCancel_Issue12_2(t *testing.T) {
	t.Parallel()
	s := newStack(t, stackOpts{concurrency: 8})
	up, srv := providertest.Start(t, providertest.Config{Latency: 100 * time.Millisecond})
	s.channel(map[string]any{"provider": "openai", "base_url": srv.URL + "/v1", "models": []string{"m"}})
	key := s.newKey(nil)
	c := openai.NewClient(option.WithBaseURL(s.base+"/v1"), option.WithAPIKey(key.Key), option.WithMaxRetries(0))
	const n = 300
	b := newBatch(t, c, n, "m")
	waitBatch(t, c, b.ID, 60*time.Second, "some lines done", func(b *openai.Batch) bool { return b.RequestCounts.Completed >= 10 })
	cb, err := c.Batches.Cancel(context.Background(), b.ID)
	if err != nil || cb.Status != "cancelling" {
		t.Fatalf("cancel: %v, status %v", err, cb)
	}
	end := waitBatch(t, c, b.ID, 60*time.Second, "the batch to be cancelled", func(b *openai.Batch) bool { return b.Status == "cancelled" })
	outs, errs := download(t, c, end.OutputFileID), download(t, c, end.ErrorFileID)
	rc := end.RequestCounts
	if rc.Total != n || int(rc.Completed) != len(outs) || int(rc.Failed) != len(errs) || len(outs)+len(errs) != n {
		t.Errorf("request_counts %+v, output %d, error %d lines", rc, len(outs), len(errs))
	}
	if len(outs) >= n || len(outs) < 10 {
		t.Errorf("%d lines ran of %d: the cancel should stop the rest", len(outs), n)
	}
	for _, l := range errs {
		if l.Error == nil || l.Error.Code != "batch_cancelled" || l.Response != nil {
			t.Errorf("cancelled line %+v, want error batch_cancelled", l)
		}
	}
	rows := checkBatchLedger(t, s, key.ID, outs, errs, n)
	if st := up.Stats(); st.Succeeded != rows {
		t.Errorf("upstream answered %d calls, %d charged", st.Succeeded, rows)
	}
	if cancelledAt := end.CancelledAt; cancelledAt == 0 {
		t.Error("no cancelled_at")
	}
}

// TestBatchWorkerKill_Issue12_2: a worker process SIGKILLed mid-batch loses no line and
// charges none twice: its lines are redelivered to the other worker, and the batch ends with
// every line in the output once and one ledger row per succeeded line.
func TestBatchWorkerKill_Issue12_2(t *testing.T) {
	t.Parallel()
	s := newStack(t, stackOpts{noWorker: true, ackWait: 3 * time.Second})
	up, srv := providertest.Start(t, providertest.Config{Latency: 50 * time.Millisecond})
	s.channel(map[string]any{"provider": "openai", "base_url": srv.URL + "/v1", "models": []string{"m"}})
	key := s.newKey(nil)
	startWorker := func() *proc {
		addr := freeAddr(t)
		env := s.workerEnv(addr, 8)
		env["WORKER_BATCH_SHARE"] = "1"
		return startProc(t, "worker", addr, env)
	}
	w1, _ := startWorker(), startWorker()
	c := openai.NewClient(option.WithBaseURL(s.base+"/v1"), option.WithAPIKey(key.Key), option.WithMaxRetries(0))
	const n = 400
	b := newBatch(t, c, n, "m")
	waitBatch(t, c, b.ID, 60*time.Second, "lines under way", func(b *openai.Batch) bool { return b.RequestCounts.Completed >= 60 })
	w1.signal(syscall.SIGKILL)
	startWorker()
	end := waitBatch(t, c, b.ID, 120*time.Second, "the batch to complete", func(b *openai.Batch) bool { return b.Status == "completed" })
	outs, errs := download(t, c, end.OutputFileID), download(t, c, end.ErrorFileID)
	if len(outs) != n || len(errs) != 0 || end.RequestCounts.Completed != n {
		t.Errorf("after the kill: %d output, %d error lines, counts %+v; want all %d succeeded", len(outs), len(errs),
			end.RequestCounts, n)
	}
	rows := checkBatchLedger(t, s, key.ID, outs, errs, n)
	if st := up.Stats(); st.Succeeded < rows {
		t.Errorf("upstream answered %d calls, fewer than the %d charged", st.Succeeded, rows)
	}
	checkCharges(t, s, up)
}
