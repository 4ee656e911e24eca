package route

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
)

// Circuit states, as Circuits reports them.
const (
	// CircuitClosed: the channel is used as usual (it may have failed once or twice).
	CircuitClosed = "closed"
	// CircuitOpen: three or more failures in a row; the channel is skipped until Until.
	CircuitOpen = "open"
	// CircuitHalfOpen: the pause of an open circuit is over; the next call is the probe
	// whose success closes it and whose failure opens it again, for longer.
	CircuitHalfOpen = "half_open"
	// CircuitCooling: not failing, but held back until Until (the upstream's Retry-After,
	// or the channel's rpm, tpm or max_concurrency used up for now).
	CircuitCooling = "cooling"
)

// openAfter is the run of retryable failures that opens a channel's circuit (Failed).
const openAfter = 3

// Circuit is one channel's breaker in one process.
type Circuit struct {
	ChannelID string `json:"channel_id"`
	State     string `json:"state"`
	// Failures is the run of retryable failures since the channel last succeeded.
	Failures int `json:"consecutive_failures"`
	// Until is when an open or cooling channel may be used again (Unix seconds); else nil.
	Until *int64 `json:"until"`
}

// Circuits returns, sorted by channel id, every channel this Router has seen fail since its
// last success or holds back now; a channel it does not list is closed with no failures.
func (r *Router) Circuits() []Circuit {
	r.mu.RLock()
	defer r.mu.RUnlock()
	now := r.now()
	out := []Circuit{}
	seen := map[string]bool{}
	add := func(id string) {
		if seen[id] {
			return
		}
		seen[id] = true
		c := Circuit{ChannelID: id, State: CircuitClosed, Failures: r.fails[id]}
		cooling := r.cool[id].After(now)
		if cooling {
			u := r.cool[id].Unix()
			c.Until = &u
		}
		switch {
		case c.Failures >= openAfter && cooling:
			c.State = CircuitOpen
		case c.Failures >= openAfter:
			c.State = CircuitHalfOpen
		case cooling:
			c.State = CircuitCooling
		}
		if c.Failures > 0 || cooling {
			out = append(out, c)
		}
	}
	for id := range r.fails {
		add(id)
	}
	for id := range r.cool {
		add(id)
	}
	slices.SortFunc(out, func(a, b Circuit) int { return strings.Compare(a.ChannelID, b.ChannelID) })
	return out
}

// circuitsSubject carries the operator's "what are your circuits?" requests to every worker.
const circuitsSubject = "sluice.admin.circuits"

// CircuitReport is one process's answer to GatherCircuits.
type CircuitReport struct {
	// Process names the process (its host and ops address).
	Process  string    `json:"process"`
	Circuits []Circuit `json:"circuits"`
}

// ServeCircuits answers GatherCircuits with this Router's Circuits, naming the process as
// process. Call the returned function to stop.
func (r *Router) ServeCircuits(nc *nats.Conn, process string) (stop func(), err error) {
	sub, err := nc.Subscribe(circuitsSubject, func(m *nats.Msg) {
		if m.Reply == "" {
			return
		}
		b, err := json.Marshal(CircuitReport{Process: process, Circuits: r.Circuits()})
		if err != nil {
			return
		}
		_ = m.Respond(b)
	})
	if err != nil {
		return nil, fmt.Errorf("subscribe to circuit requests: %w", err)
	}
	return func() { _ = sub.Unsubscribe() }, nil
}

// GatherCircuits asks every process that serves circuits (the workers) for them, and
// returns the answers that arrive within wait, sorted by process: there is no count of
// workers to wait for, so it stops at wait, or once quiet has passed without a new
// answer after the first one. No answer at all is no error (no worker runs, or none
// answered in time); a closed connection is.
func GatherCircuits(ctx context.Context, nc *nats.Conn, wait, quiet time.Duration) ([]CircuitReport, error) {
	// A disconnected client buffers the request and reports nothing: every circuit would
	// read closed. Say instead that the workers could not be asked.
	if !nc.IsConnected() {
		return nil, fmt.Errorf("gather circuits: %w", nats.ErrDisconnected)
	}
	inbox := nc.NewRespInbox()
	sub, err := nc.SubscribeSync(inbox)
	if err != nil {
		return nil, fmt.Errorf("gather circuits: %w", err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := nc.PublishRequest(circuitsSubject, inbox, nil); err != nil {
		return nil, fmt.Errorf("gather circuits: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	out := []CircuitReport{}
	for {
		mctx, mcancel := ctx, context.CancelFunc(func() {})
		if len(out) > 0 {
			mctx, mcancel = context.WithTimeout(ctx, quiet)
		}
		m, err := sub.NextMsgWithContext(mctx)
		mcancel()
		if err != nil {
			// No responders: the server says at once that no worker listens.
			if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) ||
				errors.Is(err, nats.ErrNoResponders) {
				break
			}
			return nil, fmt.Errorf("gather circuits: %w", err)
		}
		var rep CircuitReport
		if json.Unmarshal(m.Data, &rep) == nil && rep.Process != "" {
			out = append(out, rep)
		}
	}
	slices.SortFunc(out, func(a, b CircuitReport) int { return strings.Compare(a.Process, b.Process) })
	return out, nil
}
