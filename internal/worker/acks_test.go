package worker

import (
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// TestAcksAllSent_Issue10: every ack held back is sent — by its timer, by a flush, or at
// close — in time for no message to be redelivered (the stream, a work queue, ends empty);
// after close an ack goes at once.
func TestAcksAllSent_Issue10(t *testing.T) {
	t.Parallel()
	_, js, stream, cons := outcomeQueue(t)
	ctx := t.Context()
	const n = 9
	for i := range n {
		if _, err := js.Publish(ctx, fmt.Sprintf("sluice.outcomes.job_%d", i), []byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	b, err := cons.Fetch(n, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	var msgs []jetstream.Msg
	for m := range b.Messages() {
		msgs = append(msgs, m)
	}
	if len(msgs) != n {
		t.Fatalf("fetched %d of %d", len(msgs), n)
	}
	a := newAcks(slog.New(slog.DiscardHandler))
	for _, m := range msgs[:3] {
		a.add(m) // sent by the timer
	}
	waitMsgs(t, stream, n-3)
	for _, m := range msgs[3:6] {
		a.add(m)
	}
	a.flush()
	waitMsgs(t, stream, n-6)
	a.add(msgs[6])
	a.close() // sends msgs[6]
	a.add(msgs[7])
	a.add(msgs[8]) // at once, after close
	waitMsgs(t, stream, 0)
	a.flush() // nothing left: a no-op
	info, err := cons.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.NumAckPending != 0 || info.NumRedelivered != 0 || info.AckFloor.Consumer != n {
		t.Errorf("consumer: %d pending, %d redelivered, ack floor %d; want every one of %d acked once",
			info.NumAckPending, info.NumRedelivered, info.AckFloor.Consumer, n)
	}
}

// waitMsgs waits until the work-queue stream holds want messages (acked ones are removed).
func waitMsgs(t *testing.T, s jetstream.Stream, want uint64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		info, err := s.Info(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if info.State.Msgs == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("stream holds %d messages, want %d: acks not sent", info.State.Msgs, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
