package jobs_test

import (
	"context"
	"errors"
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
