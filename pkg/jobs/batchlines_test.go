package jobs_test

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/sluicehq/sluice/pkg/jobs"
	"github.com/sluicehq/sluice/pkg/store"
)

// TestBatchLineWire_Issue12_2: a batch line keeps its batch, line and custom_id through the
// job's wire form and its outcome's, so its row says which line it is.
func TestBatchLineWire_Issue12_2(t *testing.T) {
	t.Parallel()
	now := time.Now().UTC()
	j := &jobs.Job{ID: jobs.BatchLineID("batch_01ABC", 7), KeyID: "key_1", Endpoint: jobs.EndpointChat, Model: "m",
		Body: []byte(`{"model":"m"}`), CreatedAt: now, Deadline: now.Add(time.Hour), Batch: "batch_01ABC", Line: 7, CustomID: "c-7"}
	if j.ID != "job_01ABC_7" {
		t.Errorf("line id %s, want job_01ABC_7 (it must sort among job ids)", j.ID)
	}
	b, err := j.Encode()
	if err != nil {
		t.Fatal(err)
	}
	got, err := jobs.Decode(b)
	if err != nil || got.Batch != j.Batch || got.Line != 7 || got.CustomID != "c-7" || string(got.Body) != string(j.Body) {
		t.Fatalf("decoded %+v, %v", got, err)
	}
	row := got.Row(1)
	o := store.Outcome{JobID: j.ID, Status: store.StatusSucceeded, StatusCode: 200, Job: &row}
	ob, err := jobs.EncodeOutcome(&o)
	if err != nil {
		t.Fatal(err)
	}
	back, err := jobs.DecodeOutcome(ob)
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(o, back); d != "" || back.Job.BatchID != j.Batch || back.Job.BatchLine != 7 || back.Job.CustomID != "c-7" {
		t.Errorf("outcome changed on the wire (-sent +read):\n%s", d)
	}
}
