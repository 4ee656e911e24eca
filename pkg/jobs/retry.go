package jobs

import (
	"context"
	"errors"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/pkg/slots"
)

// How a publish is retried while a stream has no leader (a node of a JetStream cluster
// died, or left, and its streams elect a new one: the Raft election timeout is 4-9 s) or
// a reconnect is under way. Each try waits at most attemptTimeout for its ack; tries are
// spaced retryBase, doubling to retryMax; the caller's context bounds them all.
const (
	attemptTimeout = 2 * time.Second
	retryBase      = 50 * time.Millisecond
	retryMax       = 500 * time.Millisecond
)

// Error code of JetStream's "JetStream system temporarily unavailable" (503), answered
// while a cluster cannot reach the stream's or the meta group's leader.
const jsClusterNotAvail = 10008

// publishRetry publishes m with Nats-Msg-Id msgID (plus opts) and waits for the stream's
// ack, trying again on the failures a leader election or a reconnect causes (no
// responders, an ack that does not come, "temporarily unavailable") until ctx ends. Every
// try carries the same msgID, so the stream stores the message once however many tries
// reach it: a try whose ack was lost makes a later one a duplicate. retried is true when the
// returned ack (or error) came from a later try, so that a duplicate ack may be the
// caller's own earlier try. m's headers are set by the first try and reused.
func publishRetry(ctx context.Context, js jetstream.JetStream, m *nats.Msg, msgID string,
	opts ...jetstream.PublishOpt) (ack *jetstream.PubAck, retried bool, err error) {
	opts = append([]jetstream.PublishOpt{jetstream.WithMsgID(msgID)}, opts...)
	delay := retryBase
	for try := 0; ; try++ {
		actx, cancel := context.WithTimeout(ctx, attemptTimeout)
		ack, err = js.PublishMsg(actx, m, opts...)
		cancel()
		if err == nil || !retryable(err) || ctx.Err() != nil {
			return ack, try > 0, err
		}
		slots.Sleep(ctx, delay)
		if ctx.Err() != nil {
			return nil, true, err
		}
		delay = min(2*delay, retryMax)
	}
}

// retryable reports whether a failed publish may succeed if tried again soon: the stream
// has no leader yet, the ack was lost or late, or the connection is being re-established.
// A refusal by the stream (full, a key over its cap, too large) is final.
func retryable(err error) bool {
	if apiErr, ok := errors.AsType[*jetstream.APIError](err); ok {
		return apiErr.ErrorCode == jsClusterNotAvail
	}
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout) ||
		errors.Is(err, nats.ErrNoResponders) || errors.Is(err, jetstream.ErrAsyncPublishTimeout) || errors.Is(err, jetstream.ErrNoStreamResponse) ||
		errors.Is(err, nats.ErrConnectionReconnecting) || errors.Is(err, nats.ErrDisconnected)
}
