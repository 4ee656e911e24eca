package jobs

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/pkg/jobs/jobstest"
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

// TestReadPubAck_Issue10: the scanned ack reads as jetstream.PublishMsg's decode did: the
// duplicate flag, the stream's refusal as a wrapped *jetstream.APIError, and
// jetstream.ErrInvalidJSAck for anything that is not an ack.
func TestReadPubAck_Issue10(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		ack     string
		dup     bool
		errCode jetstream.ErrorCode // 0: no API error
		invalid bool
	}{
		{ack: `{"stream":"SLUICE_JOBS","seq":7}`},
		{ack: ` {"stream" : "S", "domain":"hub", "seq":7, "duplicate":true} `, dup: true},
		{ack: `{"stream":"S","seq":7,"duplicate":false}`},
		{ack: `{"stream":"S\u0041","seq":1,"error":null}`},
		{ack: `{"error":{"code":503,"err_code":10077,"description":"maximum messages exceeded"}}`, errCode: 10077},
		{ack: `{"stream":"S","error":{"code":400,"err_code":10060,"description":"expected stream does not match"}}`, errCode: 10060},
		{ack: `{"stream":"","seq":1}`, invalid: true},
		{ack: `{"seq":1}`, invalid: true},
		{ack: `{"stream":1}`, invalid: true},
		{ack: `[]`, invalid: true},
		{ack: `{"stream":"S"`, invalid: true},
		{ack: ``, invalid: true},
		{ack: `{"error":{"code":"x"}}`, invalid: true},
	} {
		dup, err := readPubAck([]byte(tc.ack))
		var apiErr *jetstream.APIError
		switch {
		case tc.invalid:
			if !errors.Is(err, jetstream.ErrInvalidJSAck) {
				t.Errorf("%s: err %v, want ErrInvalidJSAck", tc.ack, err)
			}
		case tc.errCode != 0:
			if !errors.As(err, &apiErr) || apiErr.ErrorCode != tc.errCode {
				t.Errorf("%s: err %v, want API error %d", tc.ack, err, tc.errCode)
			}
		case err != nil || dup != tc.dup:
			t.Errorf("%s: duplicate %v, err %v; want %v, nil", tc.ack, dup, err, tc.dup)
		}
	}
}

// TestPublishOnceAgainstJetStream_Issue10: against a real server, publishRetry sees what
// the stream answers: a first publish stored, the same Nats-Msg-Id again a duplicate, a
// full stream's refusal (10077, final), a wrong expected stream (10060), and no stream at
// all (no responders, retried until the context ends).
func TestPublishOnceAgainstJetStream_Issue10(t *testing.T) {
	t.Parallel()
	_, nc := jobstest.NewConn(t)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "ACK", Subjects: []string{"ack.>"}, MaxMsgs: 2,
		Discard: jetstream.DiscardNew, Storage: jetstream.MemoryStorage}); err != nil {
		t.Fatal(err)
	}
	pub := func(ctx context.Context, id, expect string) (bool, bool, error) {
		return publishRetry(ctx, js, &nats.Msg{Subject: "ack." + id, Data: []byte("x")}, id, expect)
	}
	if dup, retried, err := pub(ctx, "a", "ACK"); err != nil || dup || retried {
		t.Fatalf("first publish: duplicate %v retried %v err %v; want stored", dup, retried, err)
	}
	if dup, _, err := pub(ctx, "a", ""); err != nil || !dup {
		t.Fatalf("same id again: duplicate %v err %v; want a duplicate", dup, err)
	}
	var apiErr *jetstream.APIError
	if _, _, err := pub(ctx, "b", "OTHER"); !errors.As(err, &apiErr) || apiErr.ErrorCode != 10060 {
		t.Fatalf("wrong expected stream: err %v; want API error 10060", err)
	}
	if _, _, err := pub(ctx, "c", ""); err != nil {
		t.Fatalf("second message: %v", err)
	}
	if _, retried, err := pub(ctx, "d", ""); !errors.As(err, &apiErr) || apiErr.ErrorCode != 10077 || retried {
		t.Fatalf("full stream: retried %v err %v; want API error 10077 at once", retried, err)
	}
	// No stream at all: no responders on every try, until the context ends. No try can have
	// stored the message, so a later duplicate would not be this call's own.
	short, cancelShort := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancelShort()
	began := time.Now()
	_, retried, err := publishRetry(short, js, &nats.Msg{Subject: "nostream.x", Data: []byte("x")}, "e", "")
	if !errors.Is(err, jetstream.ErrNoStreamResponse) && !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("no stream: err %v; want no responders, or the deadline", err)
	}
	if retried || time.Since(began) < 250*time.Millisecond {
		t.Fatalf("no stream: retried %v after %v; want tries until the deadline, none that may have stored", retried, time.Since(began))
	}
}
