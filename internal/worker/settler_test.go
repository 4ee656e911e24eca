package worker

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/pkg/jobs"
	"github.com/sluicehq/sluice/pkg/jobs/jobstest"
	"github.com/sluicehq/sluice/pkg/store"
	"github.com/sluicehq/sluice/pkg/store/storetest"
	"github.com/sluicehq/sluice/pkg/tokens"
)

// TestSettlerWritesEachOutcomeOnce_Issue10: outcomes on the stream — some published twice,
// one redelivered beside its original, one Postgres refuses for its content — are written to
// Postgres by a settler exactly once each (the refused one without its content, still
// charged), the stream is left empty, and an async job's end is announced after its commit.
func TestSettlerWritesEachOutcomeOnce_Issue10(t *testing.T) {
	t.Parallel()
	db := storetest.New(t)
	ctx := t.Context()
	nc, js, stream, cons := outcomeQueue(t)
	if err := db.Store.SetPrice(ctx, store.Price{Model: "m", InputPerMTok: 1, OutputPerMTok: 2}); err != nil {
		t.Fatal(err)
	}
	key, _, err := db.Store.CreateKey(ctx, store.KeyParams{Name: "settle"})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	asyncJob := store.NewJob{ID: "job_async_settle", KeyID: key.ID, Endpoint: jobs.EndpointChat, Model: "m", Async: true,
		Request: json.RawMessage(`{}`), CreatedAt: now, Deadline: now.Add(time.Minute)}
	if _, _, err := db.Store.CreateQueuedJob(ctx, asyncJob, ""); err != nil {
		t.Fatal(err)
	}
	out := jobs.NewOutcomes(nc, js, stream, 5*time.Second)
	outcome := func(id string, async bool, body string) *store.Outcome {
		j := store.NewJob{ID: id, KeyID: key.ID, Endpoint: jobs.EndpointChat, Model: "m", Async: async,
			CreatedAt: now, Deadline: now.Add(time.Minute), Attempt: 1}
		return &store.Outcome{JobID: id, Status: store.StatusSucceeded, StatusCode: http.StatusOK,
			Response: json.RawMessage(body), Usage: &tokens.Usage{PromptTokens: 10, CompletionTokens: 20}, Charge: true, Job: &j}
	}
	var ids []string
	for i := range 20 {
		ids = append(ids, fmt.Sprintf("job_sync_settle_%02d", i))
		if dup, err := out.Publish(ctx, outcome(ids[i], false, `{"ok":true}`)); err != nil || dup {
			t.Fatalf("publish %d: dup=%v err=%v", i, dup, err)
		}
	}
	// A second outcome of a job already published is a duplicate: the first stands.
	second := outcome(ids[0], false, `{"ok":"second"}`)
	second.Status = store.StatusFailed
	if dup, err := out.Publish(ctx, second); err != nil || !dup {
		t.Fatalf("second outcome of %s: dup=%v err=%v, want a duplicate", ids[0], dup, err)
	}
	// Postgres refuses text that is not valid UTF-8: recorded without the content, still charged.
	bad := outcome("job_sync_settle_bad", false, "{\"text\":\"\xff\"}")
	if _, err := out.Publish(ctx, bad); err != nil {
		t.Fatal(err)
	}
	if _, err := out.Publish(ctx, outcome(asyncJob.ID, true, `{"ok":"async"}`)); err != nil {
		t.Fatal(err)
	}
	if p, err := out.Pending(ctx, ids[3]); err != nil || p == nil || p.Usage == nil || p.Usage.CompletionTokens != 20 {
		t.Fatalf("pending outcome of %s: %+v %v", ids[3], p, err)
	}
	doneSub, err := nc.SubscribeSync(jobs.DonePrefix + asyncJob.ID)
	if err != nil {
		t.Fatal(err)
	}

	st := &settler{cons: cons, finish: db.Store.FinishJobs, nc: nc, log: slog.New(slog.DiscardHandler), max: 8, budget: 1 << 20,
		wait: time.Second, ackWait: outcomeAckWait, keys: newKeyCheck(time.Minute, db.Store.KeyByID)}
	sctx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { st.run(sctx) })
	defer func() { stop(); wg.Wait() }()

	if _, err := doneSub.NextMsg(20 * time.Second); err != nil {
		t.Fatalf("no done event for the async job: %v", err)
	}
	row, err := db.Store.Job(ctx, key.ID, asyncJob.ID)
	if err != nil || !row.Terminal() || row.Status != store.StatusSucceeded {
		t.Fatalf("async job when its end was announced: %+v %v, want it settled", row, err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		info, err := stream.Info(ctx)
		if err == nil && info.State.Msgs == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("outcomes left in the stream: %+v %v", info, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	var rows, tokens int64
	var spent float64
	if err := db.Pool.QueryRow(ctx, `SELECT count(*), sum(prompt_tokens + completion_tokens), key_spent($1)::float8
		FROM usage_ledger`, key.ID).Scan(&rows, &tokens, &spent); err != nil {
		t.Fatal(err)
	}
	if rows != 22 || tokens != 22*30 || !near(spent, 22*(10*1+20*2)/1e6) {
		t.Errorf("ledger %d rows, %d tokens, spent %v; want 22 rows (20 + bad + async), %d tokens, %v", rows, tokens,
			spent, 22*30, 22*(10*1+20*2)/1e6)
	}
	first, err := db.Store.Job(ctx, key.ID, ids[0])
	if err != nil || first.Status != store.StatusSucceeded || string(first.Response) != `{"ok": true}` &&
		string(first.Response) != `{"ok":true}` {
		t.Errorf("job %s: %s %s %v, want the first outcome (succeeded)", ids[0], first.Status, first.Response, err)
	}
	badRow, err := db.Store.Job(ctx, key.ID, bad.JobID)
	if err != nil || badRow.Status != store.StatusFailed || len(badRow.Response) != 0 {
		t.Errorf("unstorable job: %s %s %v, want failed without its content", badRow.Status, badRow.Response, err)
	}
}

func near(a, b float64) bool { return a-b < 1e-12 && b-a < 1e-12 }

// outcomeAckWait is the AckWait of outcomeQueue's consumer.
const outcomeAckWait = 3 * time.Second

// outcomeQueue connects to a new embedded JetStream server and makes the outcomes stream and
// the settlers' consumer on it (AckWait outcomeAckWait).
func outcomeQueue(t *testing.T) (*nats.Conn, jetstream.JetStream, jetstream.Stream, jetstream.Consumer) {
	t.Helper()
	_, nc := jobstest.NewConn(t)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	qcfg := jobs.QueueConfig{AckWait: outcomeAckWait}
	stream, err := jobs.EnsureOutcomeStream(t.Context(), js, qcfg)
	if err != nil {
		t.Fatal(err)
	}
	cons, err := jobs.EnsureOutcomeConsumer(t.Context(), js, qcfg)
	if err != nil {
		t.Fatal(err)
	}
	return nc, js, stream, cons
}
