package jobs_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/pkg/jobs"
	"github.com/sluicehq/sluice/pkg/jobs/jobstest"
)

// TestQueueMaxBytes_Issue9_9: the stream caps bytes as well as messages, and a publish past
// the cap is ErrQueueFull (503 to the caller), as one past MaxJobs is.
func TestQueueMaxBytes_Issue9_9(t *testing.T) {
	t.Parallel()
	_, nc := jobstest.NewConn(t)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	if _, err := jobs.EnsureStream(ctx, js, jobs.QueueConfig{MaxJobs: 1000, MaxBytes: 64 << 10}); err != nil {
		t.Fatal(err)
	}
	pub := jobs.NewPublisher(nc, js, 5*time.Second)
	body := []byte(`{"model":"m","input":"` + strings.Repeat("x", 10<<10) + `"}`)
	full := 0
	for i := range 20 { // 20 × ~10 KiB against a 64 KiB cap
		_, err := pub.Publish(context.Background(), &jobs.Job{ID: "job_" + string(rune('a'+i)), KeyID: "key_1",
			Endpoint: jobs.EndpointEmbeddings, Model: "m", Body: body, CreatedAt: time.Now(), Deadline: time.Now().Add(time.Minute)})
		switch {
		case errors.Is(err, jobs.ErrQueueFull):
			full++
		case err != nil:
			t.Fatalf("publish %d: %v, want nil or ErrQueueFull", i, err)
		}
	}
	if full == 0 || full == 20 {
		t.Errorf("%d of 20 publishes refused as full, want the ones past 64 KiB", full)
	}
}

// TestMaxQueuedPerKey_Issue9_2: the stream caps each key's queued (or running) jobs, exactly
// and for every ingress at once, because each key publishes on its own subject; the key past
// its cap is refused with ErrKeyQueueFull while other keys are not, and an acked job frees
// its place.
func TestMaxQueuedPerKey_Issue9_2(t *testing.T) {
	t.Parallel()
	_, nc := jobstest.NewConn(t)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	cfg := jobs.QueueConfig{MaxQueuedPerKey: 3}
	if _, err := jobs.EnsureStream(ctx, js, cfg); err != nil {
		t.Fatal(err)
	}
	cons, err := jobs.EnsureConsumer(ctx, js, cfg)
	if err != nil {
		t.Fatal(err)
	}
	pub := jobs.NewPublisher(nc, js, 5*time.Second)
	n := 0
	publish := func(key string) error {
		n++
		_, err := pub.Publish(ctx, &jobs.Job{ID: fmt.Sprintf("job_%d", n), KeyID: key, Endpoint: jobs.EndpointChat,
			Model: "m", Body: []byte(`{}`), CreatedAt: time.Now(), Deadline: time.Now().Add(time.Minute)})
		return err
	}
	for i := range 3 {
		if err := publish("key_a"); err != nil {
			t.Fatalf("key_a job %d: %v", i, err)
		}
	}
	err = publish("key_a")
	if !errors.Is(err, jobs.ErrKeyQueueFull) {
		t.Fatalf("key_a's 4th job: %v, want ErrKeyQueueFull", err)
	}
	if errors.Is(err, jobs.ErrQueueFull) {
		t.Errorf("a key's cap is reported as the whole queue being full: %v", err)
	}
	if err := publish("key_b"); err != nil {
		t.Fatalf("key_b beside a full key_a: %v", err)
	}
	// A worker finishes one of key_a's jobs: key_a may queue one more, and only one.
	batch, err := cons.Fetch(1, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	for m := range batch.Messages() {
		if err := m.DoubleAck(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if err := publish("key_a"); err != nil {
		t.Fatalf("key_a after an ack: %v", err)
	}
	if err := publish("key_a"); !errors.Is(err, jobs.ErrKeyQueueFull) {
		t.Fatalf("key_a back at its cap: %v, want ErrKeyQueueFull", err)
	}
}
