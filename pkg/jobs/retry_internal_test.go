package jobs

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// TestPublishErrClasses_Issue13_1: a cluster without a stream leader (503 / 10008) is a
// retryable unavailability, not a full queue; a full stream (10077) is final.
func TestPublishErrClasses_Issue13_1(t *testing.T) {
	t.Parallel()
	j := &Job{ID: "job_1"}
	noLeader := fmt.Errorf("nats: %w", &jetstream.APIError{Code: 503, ErrorCode: jsClusterNotAvail, Description: "JetStream system temporarily unavailable"})
	full := fmt.Errorf("nats: %w", &jetstream.APIError{Code: 503, ErrorCode: 10077, Description: "maximum messages exceeded"})
	if !retryable(noLeader) || !errors.Is(publishErr(j, noLeader), ErrUnavailable) {
		t.Errorf("10008: retryable %v, class %v; want retryable and ErrUnavailable", retryable(noLeader), publishErr(j, noLeader))
	}
	if retryable(full) || !errors.Is(publishErr(j, full), ErrQueueFull) {
		t.Errorf("10077: retryable %v, class %v; want final and ErrQueueFull", retryable(full), publishErr(j, full))
	}
	for _, err := range []error{context.DeadlineExceeded, nats.ErrTimeout, nats.ErrNoResponders, jetstream.ErrNoStreamResponse} {
		if !retryable(fmt.Errorf("x: %w", err)) {
			t.Errorf("%v: not retryable", err)
		}
	}
}
