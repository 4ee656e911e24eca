package jobs_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/pkg/jobs"
	"github.com/sluicehq/sluice/pkg/jobs/jobstest"
	"github.com/sluicehq/sluice/pkg/store"
)

// streamLater creates the job and outcome streams after a while, in a goroutine the test
// waits for, as a cluster electing a stream leader makes a stream answer nothing for a
// few seconds (no responders, or no ack).
func streamLater(t *testing.T, js jetstream.JetStream) {
	t.Helper()
	var wg sync.WaitGroup
	t.Cleanup(wg.Wait)
	wg.Go(func() {
		time.Sleep(1500 * time.Millisecond) // longer than nats.go's own no-responders retries (2 × 250 ms)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if _, err := jobs.EnsureStream(ctx, js, jobs.QueueConfig{}); err != nil {
			t.Errorf("ensure stream: %v", err)
		}
		if _, err := jobs.EnsureOutcomeStream(ctx, js, jobs.QueueConfig{}); err != nil {
			t.Errorf("ensure outcome stream: %v", err)
		}
	})
}

func retryJob(id string) *jobs.Job {
	return &jobs.Job{ID: id, KeyID: "key_1", Endpoint: jobs.EndpointEmbeddings, Model: "m", Body: []byte(`{"model":"m","input":"x"}`),
		CreatedAt: time.Now(), Deadline: time.Now().Add(time.Minute)}
}

// TestPublishRetriesWhileNoLeader_Issue13_1: a publish that finds no stream answering (as
// while a leader is elected) is tried again with the same Nats-Msg-Id until it is stored,
// within the publisher's timeout; a later publish of the same job is then a duplicate, and
// the stream holds each job once. Before the retry, Publish failed with ErrUnavailable
// after nats.go's half second of no-responders retries.
func TestPublishRetriesWhileNoLeader_Issue13_1(t *testing.T) {
	t.Parallel()
	_, nc := jobstest.NewConn(t)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	streamLater(t, js)
	pub := jobs.NewPublisher(nc, js, 15*time.Second)
	var wg sync.WaitGroup
	var batchErrs []error
	wg.Go(func() {
		batchErrs = pub.PublishAll(context.Background(), []*jobs.Job{retryJob("job_b1"), retryJob("job_b2"), retryJob("job_b3")})
	})
	dup, err := pub.Publish(context.Background(), retryJob("job_r1"))
	if err != nil || dup {
		t.Fatalf("Publish while the stream had no leader = %v, %v; want it retried until stored", dup, err)
	}
	wg.Wait()
	for i, err := range batchErrs {
		if err != nil {
			t.Errorf("PublishAll job %d while the stream had no leader: %v", i, err)
		}
	}
	if dup, err := pub.Publish(context.Background(), retryJob("job_r1")); err != nil || !dup {
		t.Errorf("second Publish of the same job = %v, %v; want a duplicate", dup, err)
	}
	s, err := js.Stream(t.Context(), jobs.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 4 {
		t.Errorf("stream holds %d jobs, want 4 (each once)", info.State.Msgs)
	}
}

// TestOutcomePublishRetries_Issue13_1: the worker's outcome publish is retried the same
// way, with the job id as message id, so an outcome is stored once; publishing it again
// reports a duplicate (an outcome of the job is recorded: the worker answers from it).
func TestOutcomePublishRetries_Issue13_1(t *testing.T) {
	t.Parallel()
	_, nc := jobstest.NewConn(t)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	streamLater(t, js)
	o := &store.Outcome{JobID: "job_o1", Status: store.StatusSucceeded, StatusCode: 200, Response: []byte(`{}`)}
	out := jobs.NewOutcomes(nc, js, nil, 15*time.Second)
	if dup, err := out.Publish(context.Background(), o); err != nil || dup {
		t.Fatalf("outcome Publish while the stream had no leader = %v, %v; want it retried until stored", dup, err)
	}
	if dup, err := out.Publish(context.Background(), o); err != nil || !dup {
		t.Errorf("second outcome Publish = %v, %v; want a duplicate", dup, err)
	}
}
