package e2e

import (
	"context"
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/pkg/ids"
	"github.com/sluicehq/sluice/pkg/jobs"
	"github.com/sluicehq/sluice/pkg/jobs/jobstest"
	"github.com/sluicehq/sluice/pkg/providers/providertest"
)

// TestUnknownKeyRefused_Issue9_5: a job that reaches the stream without passing the
// ingress (anyone who can publish on NATS), under a key id that does not exist, ends
// failed with invalid_api_key at pick-up: its caller is told, nothing is charged, and the
// upstream is never called. A real key's job beside it runs.
func TestUnknownKeyRefused_Issue9_5(t *testing.T) {
	t.Parallel()
	s := newStack(t, stackOpts{})
	up, srv := providertest.Start(t, providertest.Config{})
	s.channel(map[string]any{"provider": "openai", "base_url": srv.URL + "/v1", "models": []string{"m"}})
	s.price("m", 1, 1)
	good := s.newKey(map[string]any{"name": "good"})

	nc := jobstest.Connect(t, s.nats.URL)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	mux, err := jobs.NewMux(nc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = mux.Close() })
	waiter := mux.Wait(16)
	defer waiter.Done()
	body, err := json.Marshal(chatBody("m", "forged"))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	forged := &jobs.Job{ID: ids.NewAt("job", now), KeyID: "key_" + ids.Random(16), Endpoint: jobs.EndpointChat,
		Model: "m", Body: body, CreatedAt: now, Deadline: now.Add(30 * time.Second), Reply: waiter.Subject}
	if _, err := jobs.NewPublisher(nc, js, 5*time.Second).Publish(context.Background(), forged); err != nil {
		t.Fatalf("publish the forged job: %v", err)
	}

	// The waiting caller gets a final that says the key does not exist.
	var final *jobs.Final
	deadline := time.After(20 * time.Second)
	for final == nil {
		select {
		case m := <-waiter.C():
			r, err := jobs.ParseReply(m)
			if err != nil {
				t.Fatalf("parse reply: %v", err)
			}
			final = r.Final
		case <-deadline:
			t.Fatal("no final reply for the forged job")
		}
	}
	if final.Status != "failed" || final.Error == nil || final.Error.Code != "invalid_api_key" {
		t.Errorf("final = status %q, error %+v; want failed with invalid_api_key", final.Status, final.Error)
	}

	var status, code string
	eventually(t, 20*time.Second, "the forged job's row", func() bool {
		return s.db.Pool.QueryRow(context.Background(), `SELECT status, COALESCE(error->>'code', '') FROM jobs WHERE id = $1`,
			forged.ID).Scan(&status, &code) == nil
	})
	if status != "failed" || code != "invalid_api_key" {
		t.Errorf("forged job row: %s / %s, want failed / invalid_api_key", status, code)
	}

	// A real key's request runs, so the upstream was reachable all along.
	if resp, _ := s.do(http.MethodPost, "/v1/chat/completions", good.Key, chatBody("m", "real")); resp.StatusCode != http.StatusOK {
		t.Fatalf("good key's chat = %d", resp.StatusCode)
	}
	var calls int64
	for _, n := range up.Stats().Requests {
		calls += n
	}
	if calls != 1 {
		t.Errorf("upstream saw %d requests, want 1 (the forged job must never reach it)", calls)
	}
	var charged int
	if err := s.db.Pool.QueryRow(context.Background(), `SELECT count(*) FROM usage_ledger WHERE job_id = $1`, forged.ID).
		Scan(&charged); err != nil || charged != 0 {
		t.Errorf("ledger rows for the forged job: %d (%v), want 0", charged, err)
	}
}
