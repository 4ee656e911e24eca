package e2e

import (
	"context"
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/internal/worker"
	"github.com/sluicehq/sluice/pkg/ids"
	"github.com/sluicehq/sluice/pkg/jobs"
	"github.com/sluicehq/sluice/pkg/jobs/jobstest"
	"github.com/sluicehq/sluice/pkg/providers/providertest"
)

// TestDuplicateDeliveryChargedOnce delivers one job twice (two stream messages carrying the
// same job, as a redelivery would) and checks it is charged once, in the ledger and in the
// usage metrics, and its caller answered.
func TestDuplicateDeliveryChargedOnce(t *testing.T) {
	t.Parallel()
	s := newStack(t, stackOpts{})
	up, srv := providertest.Start(t, providertest.Config{})
	s.channel(map[string]any{"provider": "openai", "base_url": srv.URL + "/v1", "models": []string{"m"}})
	s.price("m", 3, 5)
	k := s.newKey(nil)

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
	subject, replies, done := mux.Register(64)
	defer done()
	body, _ := json.Marshal(chatBody("m", "twice"))
	now := time.Now()
	job := &jobs.Job{ID: ids.New("job"), KeyID: k.ID, Endpoint: jobs.EndpointChat, Model: "m", Body: body,
		CreatedAt: now, Deadline: now.Add(time.Minute), Reply: subject}
	data, _ := job.Encode()
	for _, msgID := range []string{job.ID + "-a", job.ID + "-b"} {
		if _, err := js.PublishMsg(context.Background(), &nats.Msg{Subject: "sluice.jobs.run", Data: data},
			jetstream.WithMsgID(msgID)); err != nil {
			t.Fatal(err)
		}
	}
	var finals []jobs.Final
	timeout := time.After(20 * time.Second)
	for len(finals) < 2 {
		select {
		case m := <-replies:
			rep, err := jobs.ParseReply(m)
			if err != nil {
				t.Fatal(err)
			}
			if rep.Kind == jobs.KindFinal {
				finals = append(finals, *rep.Final)
			}
		case <-timeout:
			t.Fatalf("got %d final replies, want one per delivery", len(finals))
		}
	}
	_, pt, ct := fakeAnswer("twice")
	for _, f := range finals {
		// The cost is priced when the outcome is settled; replies carry status and usage.
		if f.Status != "succeeded" || f.Usage == nil || f.Usage.PromptTokens != pt || f.Usage.CompletionTokens != ct {
			t.Errorf("final %+v, want both deliveries to report the one succeeded result with its usage", f)
		}
	}
	s.settled()
	var rows int
	var spent float64
	if err := s.db.Pool.QueryRow(context.Background(), `SELECT (SELECT count(*) FROM usage_ledger),
		key_spent($1)::float8`, k.ID).Scan(&rows, &spent); err != nil {
		t.Fatal(err)
	}
	if want := (float64(pt)*3 + float64(ct)*5) / 1e6; rows != 1 || !near(spent, want) {
		t.Errorf("ledger rows %d spent %v, want 1 row and %v", rows, spent, want)
	}
	// The usage metrics count the job once too (issue 14), though both deliveries ran it.
	if in, out := metric(t, s.ops, `sluice_usage_tokens_total{model="m",type="input"}`),
		metric(t, s.ops, `sluice_usage_tokens_total{model="m",type="output"}`); in != float64(pt) || out != float64(ct) {
		t.Errorf("sluice_usage_tokens_total input %v output %v, want %d and %d (once)", in, out, pt, ct)
	}
	t.Logf("upstream calls for two deliveries: %d", up.Stats().Succeeded)
}

// TestWorkerStopMidCallRedelivers stops the worker running a job mid-call: the job goes back
// to the queue, another worker runs it, the caller gets one answer, and it is charged once.
func TestWorkerStopMidCallRedelivers(t *testing.T) {
	t.Parallel()
	s := newStack(t, stackOpts{tune: func(c *worker.PoolConfig) { c.ShutdownGrace = 100 * time.Millisecond }})
	up, _ := providertest.Start(t, providertest.Config{})
	g, srv := newGate(t, up)
	s.channel(map[string]any{"provider": "openai", "base_url": srv.URL + "/v1", "models": []string{"m"}})
	s.price("m", 1, 1)
	k := s.newKey(nil)

	type result struct {
		code int
		body []byte
	}
	res := make(chan result, 1)
	go func() {
		resp, b := s.do(http.MethodPost, "/v1/chat/completions", k.Key, chatBody("m", "survive"))
		res <- result{resp.StatusCode, b}
	}()
	eventually(t, 10*time.Second, "first worker calling upstream", func() bool { return g.inflight.Load() == 1 })
	_, _ = s.startWorker() // the survivor
	s.stopW()              // grace 100ms, then the call is cut and the job handed back
	eventually(t, 10*time.Second, "second worker calling upstream", func() bool { return g.calls.Load() == 2 && g.inflight.Load() == 1 })
	g.open()
	r := <-res
	if r.code != 200 {
		t.Fatalf("caller got %d %s, want 200 from the second worker", r.code, r.body)
	}
	s.settled()
	var rows, attempts int
	if err := s.db.Pool.QueryRow(context.Background(), `SELECT (SELECT count(*) FROM usage_ledger),
		(SELECT attempts FROM jobs)`).Scan(&rows, &attempts); err != nil {
		t.Fatal(err)
	}
	if rows != 1 || attempts != 2 {
		t.Errorf("ledger rows %d, attempts %d; want charged once after 2 deliveries", rows, attempts)
	}
}
