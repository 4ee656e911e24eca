package batches

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/pkg/batches"
	"github.com/sluicehq/sluice/pkg/files"
	"github.com/sluicehq/sluice/pkg/ids"
	"github.com/sluicehq/sluice/pkg/jobs"
	"github.com/sluicehq/sluice/pkg/store"
	"github.com/sluicehq/sluice/pkg/store/storetest"
	"github.com/sluicehq/sluice/pkg/tokens"
)

type allModels struct{}

func (allModels) Has(string) bool { return true }

// TestBatchExpiry_Issue12_2: past its 24 h window a batch ends expired: the line that ran
// keeps its output, the lines that never ran go to the error file as batch_expired (with
// their custom_id from the input file), and its batch.expired event is queued once.
func TestBatchExpiry_Issue12_2(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := storetest.New(t)
	fs, bs := files.New(db.Pool), batches.New(db.Pool)
	key, _, err := db.Store.CreateKey(ctx, store.KeyParams{Name: "k"})
	if err != nil {
		t.Fatal(err)
	}
	var in strings.Builder
	for i := range 3 {
		fmt.Fprintf(&in, `{"custom_id":"c%d","method":"POST","url":"/v1/chat/completions","body":{"model":"m","messages":[{"role":"user","content":"x"}]}}`+"\n", i)
	}
	f, err := fs.Create(ctx, files.File{ID: "file-in", KeyID: key.ID, Purpose: files.PurposeBatch, Filename: "in.jsonl"},
		strings.NewReader(in.String()), files.Limits{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	created := time.Now().Add(-25 * time.Hour)
	b, err := bs.Create(ctx, batches.Batch{ID: ids.NewAt("batch", created), KeyID: key.ID, Kind: batches.KindOpenAI,
		Endpoint: jobs.EndpointChat, InputFileID: f.ID, ExpiresAt: created.Add(jobs.BatchWindow), Total: 3,
		WebhookURL: "https://example.com/hook"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Pool.Exec(ctx, `UPDATE batches SET status = 'in_progress', published = 1 WHERE id = $1`, b.ID); err != nil {
		t.Fatal(err)
	}
	ran := (&jobs.Job{ID: jobs.BatchLineID(b.ID, 0), KeyID: key.ID, Endpoint: b.Endpoint, Model: "m", CreatedAt: created,
		Deadline: b.ExpiresAt, Batch: b.ID, Line: 0, CustomID: "c0"}).Row(1)
	if _, err := db.Store.FinishJobs(ctx, []store.Outcome{{JobID: ran.ID, Status: store.StatusSucceeded, StatusCode: 200,
		Response: []byte(`{"choices":[]}`), Usage: &tokens.Usage{PromptTokens: 1, CompletionTokens: 1}, Charge: true, Job: &ran}}); err != nil {
		t.Fatal(err)
	}
	r := NewRunner(Config{ExpiryGrace: time.Millisecond}, bs, fs, db.Store.KeyByID, allModels{}, nil, slog.New(slog.DiscardHandler))
	claimed, err := bs.Claim(ctx, 4, time.Minute)
	if err != nil || len(claimed) != 1 {
		t.Fatalf("claim: %v, %d batches", err, len(claimed))
	}
	r.step(ctx, &claimed[0])
	r.step(ctx, &claimed[0]) // again, as a runner that took over would: nothing changes
	got, err := bs.Get(ctx, key.ID, b.ID)
	if err != nil || got.Status != batches.StatusExpired || got.Completed != 1 || got.Failed != 2 || got.ExpiredAt == nil {
		t.Fatalf("batch %+v (err %v), want expired with 1 completed, 2 failed", got, err)
	}
	var out, errs strings.Builder
	if _, err := fs.WriteTo(ctx, &out, *got.OutputFileID); err != nil {
		t.Fatal(err)
	}
	if _, err := fs.WriteTo(ctx, &errs, *got.ErrorFileID); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), `"custom_id":"c0"`) || strings.Count(out.String(), "\n") != 1 {
		t.Errorf("output file %s", out.String())
	}
	for _, l := range strings.Split(strings.TrimSpace(errs.String()), "\n") {
		var e openAILine
		if json.Unmarshal([]byte(l), &e) != nil || e.Error == nil || e.Error.Code != codeExpired || e.Response != nil ||
			(e.CustomID != "c1" && e.CustomID != "c2") {
			t.Errorf("error line %s, want batch_expired with its custom_id", l)
		}
	}
	var events int
	var body string
	if err := db.Pool.QueryRow(ctx, `SELECT count(*), max(j.response::text) FROM webhook_deliveries d JOIN jobs j ON j.id = d.job_id
		WHERE j.batch_id = $1`, b.ID).Scan(&events, &body); err != nil || events != 1 || !strings.Contains(body, `"batch.expired"`) {
		t.Errorf("%d webhook deliveries (err %v), body %s; want one batch.expired", events, err, body)
	}
}
