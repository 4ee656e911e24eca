package jobs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/pkg/jsonscan"
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

// publishRetry publishes m with Nats-Msg-Id msgID (and, unless empty, Nats-Expected-Stream
// expectStream) and waits for the stream's ack, trying again on the failures a leader
// election or a reconnect causes (no responders, an ack that does not come, "temporarily
// unavailable") until ctx ends. Every try carries the same msgID, so the stream stores the
// message once however many tries reach it: a try whose ack was lost makes a later one a
// duplicate. duplicate is the stream's verdict on the try that was answered; retried is
// true when an earlier try may have been stored (its ack was lost or late, not "no
// responders"), so that a duplicate may be the caller's own earlier try. m's headers are
// set once and reused.
func publishRetry(ctx context.Context, js jetstream.JetStream, m *nats.Msg, msgID, expectStream string) (
	duplicate, retried bool, err error) {
	if m.Header == nil {
		m.Header = nats.Header{}
	}
	m.Header.Set(jetstream.MsgIDHeader, msgID)
	if expectStream != "" {
		m.Header.Set(jetstream.ExpectedStreamHeader, expectStream)
	}
	nc := js.Conn()
	delay := retryBase
	for {
		duplicate, err = publishOnce(ctx, nc, m)
		if err == nil || !retryable(err) || ctx.Err() != nil {
			return duplicate, retried, err
		}
		// No responders: no stream took the message. Anything else may have stored it.
		retried = retried || !errors.Is(err, jetstream.ErrNoStreamResponse)
		slots.Sleep(ctx, delay)
		if ctx.Err() != nil {
			return false, retried, err
		}
		delay = min(2*delay, retryMax)
	}
}

// publishOnce is one try of a JetStream publish, as jetstream.PublishMsg makes it (minus
// its own retries, which publishRetry makes), except that the ack is read with a scan
// instead of encoding/json. The reflective decode ran at the deepest point of a sync
// request's goroutine and took it past 8 KiB, so every held request kept a 16 KiB stack
// (BENCHMARKS.md, "Stacks under the wait").
func publishOnce(ctx context.Context, nc *nats.Conn, m *nats.Msg) (duplicate bool, err error) {
	actx, cancel := context.WithTimeout(ctx, attemptTimeout)
	defer cancel()
	resp, err := nc.RequestMsgWithContext(actx, m)
	if err != nil {
		if errors.Is(err, nats.ErrNoResponders) {
			return false, jetstream.ErrNoStreamResponse
		}
		return false, err
	}
	return readPubAck(resp.Data)
}

// readPubAck reads a JetStream publish ack: {"stream":…,"seq":…,"duplicate":true} or
// {"error":{"code":…,"err_code":…,"description":…}}. Errors are what jetstream.PublishMsg
// returns: the stream's *jetstream.APIError (wrapped), or jetstream.ErrInvalidJSAck.
func readPubAck(b []byte) (duplicate bool, err error) {
	var stream bool
	var apiErr []byte
	scan := jsonscan.Object(b, func(key, v []byte) bool {
		switch string(key) {
		case "stream":
			stream = len(v) > 2 && v[0] == '"'
		case "duplicate":
			duplicate = string(v) == "true"
		case "error":
			apiErr = v
		}
		return true
	})
	switch {
	case scan != nil:
		return false, jetstream.ErrInvalidJSAck
	case !jsonscan.IsNull(apiErr):
		e := new(jetstream.APIError) // rare: a refusal may take the deep decode
		if json.Unmarshal(apiErr, e) != nil {
			return false, jetstream.ErrInvalidJSAck
		}
		return false, fmt.Errorf("nats: %w", e)
	case !stream:
		return false, jetstream.ErrInvalidJSAck
	}
	return duplicate, nil
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
