package jobs

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Batch lines are jobs on a stream of their own, SLUICE_BATCH_LINES, pulled by a consumer
// of their own: workers give them a bounded share of their slots (WORKER_BATCH_SHARE), so a
// 50,000-line batch drains beside interactive traffic instead of in front of it, and the
// per-key cap of the job stream (KEY_MAX_QUEUED) does not apply to them. A line's subject is
// batchPrefix + batch id (a cancel or expiry can be seen per batch); its message id is its
// job id, so a runner that publishes a line again (after taking over a batch) stores it once.
const (
	BatchStreamName   = "SLUICE_BATCH_LINES"
	BatchConsumerName = "sluice-batch-workers"
	batchPrefix       = "sluice.batch.run."
	// BatchWindow is the completion window of a batch (the only one OpenAI offers).
	BatchWindow = 24 * time.Hour
)

// batchMaxAge keeps a line past its batch's window (its deadline ends it first) plus a
// margin for the runner to see it end.
const batchMaxAge = BatchWindow + 2*time.Hour

// BatchLineID is the job id of line n (0-based) of batch id: "job_" + the batch id's
// time-ordered part + "_" + n. It sorts among job ids by its batch's creation time, which
// the retention sweep (store.DeleteFinishedBefore, by id) relies on.
func BatchLineID(batchID string, n int) string {
	return "job_" + strings.TrimPrefix(batchID, "batch_") + "_" + strconv.Itoa(n)
}

// EnsureBatchStream creates the batch-line stream or updates it. It holds at most
// cfg.MaxJobs × 10 lines (a full queue refuses the runner's publish, which it retries).
func EnsureBatchStream(ctx context.Context, js jetstream.JetStream, cfg QueueConfig) (jetstream.Stream, error) {
	cfg = cfg.WithDefaults()
	s, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:        BatchStreamName,
		Description: "Sluice batch lines",
		Subjects:    []string{batchPrefix + ">"},
		Retention:   jetstream.WorkQueuePolicy,
		Storage:     jetstream.FileStorage,
		Replicas:    cfg.Replicas,
		MaxMsgs:     cfg.MaxJobs * 10,
		MaxBytes:    maxBytes(cfg.MaxBytes),
		Discard:     jetstream.DiscardNew,
		MaxAge:      batchMaxAge,
		Duplicates:  min(cfg.DedupWindow, batchMaxAge),
	})
	if err != nil {
		return nil, fmt.Errorf("ensure stream %s: %w", BatchStreamName, err)
	}
	return s, nil
}

// EnsureBatchConsumer creates the workers' batch-line consumer or updates it to cfg.
func EnsureBatchConsumer(ctx context.Context, js jetstream.JetStream, cfg QueueConfig) (jetstream.Consumer, error) {
	cfg = cfg.WithDefaults()
	c, err := js.CreateOrUpdateConsumer(ctx, BatchStreamName, jetstream.ConsumerConfig{
		Durable:       BatchConsumerName,
		Description:   "Sluice worker pool, batch lines",
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       cfg.AckWait,
		MaxDeliver:    cfg.MaxDeliver,
		MaxAckPending: cfg.MaxAckPending,
		FilterSubject: batchPrefix + ">",
		Replicas:      cfg.Replicas,
	})
	if err != nil {
		return nil, fmt.Errorf("ensure consumer %s: %w", BatchConsumerName, err)
	}
	return c, nil
}
