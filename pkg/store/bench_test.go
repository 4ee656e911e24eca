package store_test

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluicehq/sluice/pkg/ids"
	"github.com/sluicehq/sluice/pkg/store"
	"github.com/sluicehq/sluice/pkg/store/storetest"
	"github.com/sluicehq/sluice/pkg/tokens"
)

// benchAnswer is a small chat completion, what a worker records for a typical job.
var benchAnswer = json.RawMessage(`{"id":"chatcmpl-bench","object":"chat.completion","created":1764140000,` +
	`"model":"bench-model","choices":[{"index":0,"message":{"role":"assistant","content":"Echo: Sluice bench: the ` +
	`quick brown fox jumps over the lazy dog"},"finish_reason":"stop"}],` +
	`"usage":{"prompt_tokens":31,"completion_tokens":12,"total_tokens":43}}`)

var benchRequest = json.RawMessage(`{"model":"bench-model","messages":[{"role":"user","content":"Sluice bench: the ` +
	`quick brown fox jumps over the lazy dog"}]}`)

func benchKeys(b *testing.B, st *store.Store, n int) []string {
	b.Helper()
	keys := make([]string, n)
	for i := range keys {
		k, _, err := st.CreateKey(context.Background(), store.KeyParams{Name: fmt.Sprintf("bench-%d", i)})
		if err != nil {
			b.Fatal(err)
		}
		keys[i] = k.ID
	}
	return keys
}

func benchNewJob(keyID string) store.NewJob {
	now := time.Now()
	return store.NewJob{ID: ids.NewAt("job", now), KeyID: keyID, Endpoint: "/v1/chat/completions", Model: "bench-model",
		Request: benchRequest, CreatedAt: now, Deadline: now.Add(15 * time.Minute), Attempt: 1}
}

// benchStartJobs starts jobs with 16 goroutines (set-up, not measured).
func benchStartJobs(b *testing.B, st *store.Store, jobs []store.NewJob) {
	b.Helper()
	var next atomic.Int64
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			for i := int(next.Add(1) - 1); i < len(jobs); i = int(next.Add(1) - 1) {
				if _, started, err := st.StartJob(context.Background(), jobs[i]); err != nil || !started {
					b.Errorf("StartJob: started=%v err=%v", started, err)
					return
				}
			}
		})
	}
	wg.Wait()
	if b.Failed() {
		b.FailNow()
	}
}

// BenchmarkFinishJob measures recording a successful, charged job (result, ledger row and
// spend in one statement) on real Postgres, as the worker calls it (with the job described,
// so no extra read):
//   - row=started: the job's row exists (StartJob ran first);
//   - row=new: it does not (a sync job recorded only when it ends);
//   - callers=16: 16 goroutines at once, on one API key (every call updates the same
//     api_keys row) or spread over 16 keys. ns/op is then wall time per job, so jobs/s is
//     the throughput of all of them together.
func BenchmarkFinishJob(b *testing.B) {
	db := storetest.New(b)
	if err := db.Store.SetPrice(context.Background(), store.Price{Model: "bench-model", InputPerMTok: 0.15,
		OutputPerMTok: 0.6}); err != nil {
		b.Fatal(err)
	}
	oneKey, manyKeys := benchKeys(b, db.Store, 1), benchKeys(b, db.Store, 16)
	for _, bc := range []struct {
		name    string
		started bool
		callers int
		keys    []string
	}{
		{"row=started/callers=1", true, 1, oneKey},
		{"row=new/callers=1", false, 1, oneKey},
		{"row=started/callers=16/one-key", true, 16, oneKey},
		{"row=started/callers=16/16-keys", true, 16, manyKeys},
	} {
		b.Run(bc.name, func(b *testing.B) {
			jobs := make([]store.NewJob, b.N)
			for i := range jobs {
				jobs[i] = benchNewJob(bc.keys[i%len(bc.keys)])
			}
			if bc.started {
				benchStartJobs(b, db.Store, jobs)
			}
			var next atomic.Int64
			var wg sync.WaitGroup
			b.ReportAllocs()
			b.ResetTimer()
			for range bc.callers {
				wg.Go(func() {
					for i := int(next.Add(1) - 1); i < b.N; i = int(next.Add(1) - 1) {
						f, err := db.Store.FinishJob(context.Background(), store.Outcome{JobID: jobs[i].ID,
							Status: store.StatusSucceeded, StatusCode: 200, Response: benchAnswer,
							Usage: &tokens.Usage{PromptTokens: 31, CompletionTokens: 12}, Charge: true, Job: &jobs[i]})
						if err != nil || !f.Applied {
							b.Errorf("FinishJob: applied=%v err=%v", f.Applied, err)
							return
						}
					}
				})
			}
			wg.Wait()
			b.StopTimer()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "jobs/s")
		})
	}
}

// BenchmarkStartJob measures the other write of every sync job: inserting it as running.
func BenchmarkStartJob(b *testing.B) {
	db := storetest.New(b)
	key := benchKeys(b, db.Store, 1)[0]
	b.ReportAllocs()
	for b.Loop() {
		if _, started, err := db.Store.StartJob(context.Background(), benchNewJob(key)); err != nil || !started {
			b.Fatalf("StartJob: started=%v err=%v", started, err)
		}
	}
}

// BenchmarkCreateQueuedJob measures the Postgres write of every async submission (POST
// /v1/jobs), one caller at a time and 16 at once on one key.
func BenchmarkCreateQueuedJob(b *testing.B) {
	db := storetest.New(b)
	key := benchKeys(b, db.Store, 1)[0]
	for _, callers := range []int{1, 16} {
		b.Run(fmt.Sprintf("callers=%d", callers), func(b *testing.B) {
			var next atomic.Int64
			var wg sync.WaitGroup
			b.ReportAllocs()
			for range callers {
				wg.Go(func() {
					for next.Add(1) <= int64(b.N) {
						j := benchNewJob(key)
						j.Async, j.Metadata = true, map[string]string{"customer": "42"}
						if _, created, err := db.Store.CreateQueuedJob(context.Background(), j, ""); err != nil || !created {
							b.Errorf("CreateQueuedJob: created=%v err=%v", created, err)
							return
						}
					}
				})
			}
			wg.Wait()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "jobs/s")
		})
	}
}

// BenchmarkFinishJobsBatch measures settlement as the worker's settlers do it under load:
// batches of new sync jobs (no row yet) in one statement each, from 2 callers at once (the
// worker ran 2 settlers when this was written; it runs 1 since spend is sharded, and the
// figures for 2 callers bound that case), spread over 4 keys. ns/op and jobs/s are per job.
func BenchmarkFinishJobsBatch(b *testing.B) {
	db := storetest.New(b)
	if err := db.Store.SetPrice(context.Background(), store.Price{Model: "bench-model", InputPerMTok: 0.15,
		OutputPerMTok: 0.6}); err != nil {
		b.Fatal(err)
	}
	keys := benchKeys(b, db.Store, 4)
	for _, size := range []int{1, 4, 8, 32} {
		b.Run(fmt.Sprintf("batch=%d", size), func(b *testing.B) {
			var next atomic.Int64
			var wg sync.WaitGroup
			b.ReportAllocs()
			for range 2 {
				wg.Go(func() {
					batch := make([]store.Outcome, 0, size)
					jobs := make([]store.NewJob, size)
					for {
						n := min(int64(size), int64(b.N)-(next.Add(int64(size))-int64(size)))
						if n <= 0 {
							return
						}
						batch = batch[:0]
						for i := range int(n) {
							jobs[i] = benchNewJob(keys[i%len(keys)])
							batch = append(batch, store.Outcome{JobID: jobs[i].ID, Status: store.StatusSucceeded,
								StatusCode: 200, Response: benchAnswer, Usage: &tokens.Usage{PromptTokens: 31,
									CompletionTokens: 12}, Charge: true, Job: &jobs[i]})
						}
						fs, err := db.Store.FinishJobs(context.Background(), batch)
						if err != nil {
							b.Errorf("FinishJobs: %v", err)
							return
						}
						for _, f := range fs {
							if !f.Applied {
								b.Errorf("FinishJobs: not applied")
								return
							}
						}
					}
				})
			}
			wg.Wait()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "jobs/s")
		})
	}
}
