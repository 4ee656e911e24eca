package jobs

import (
	"fmt"
	"strings"
	"sync"

	"github.com/nats-io/nats.go"
)

// DoneHub wakes requests waiting for jobs to end (GET /v1/jobs/{id}?wait=…) over ONE
// subscription per process to the done events workers publish, instead of polling Postgres.
type DoneHub struct {
	sub     *nats.Subscription
	mu      sync.Mutex
	waiters map[string]map[chan struct{}]struct{}
}

// NewDoneHub subscribes to done events. Call Close when done.
func NewDoneHub(nc *nats.Conn) (*DoneHub, error) {
	h := &DoneHub{waiters: map[string]map[chan struct{}]struct{}{}}
	sub, err := nc.Subscribe(DonePrefix+"*", h.dispatch)
	if err != nil {
		return nil, fmt.Errorf("subscribe to done events: %w", err)
	}
	h.sub = sub
	return h, nil
}

func (h *DoneHub) dispatch(m *nats.Msg) {
	id := strings.TrimPrefix(m.Subject, DonePrefix)
	h.mu.Lock()
	defer h.mu.Unlock()
	for ch := range h.waiters[id] {
		select {
		case ch <- struct{}{}:
		default: // already signalled
		}
	}
}

// Wait returns a channel that receives once job id ends, and a function that must be called
// to stop waiting. Register before reading the job's state, so an end in between is not missed.
func (h *DoneHub) Wait(id string) (<-chan struct{}, func()) {
	ch := make(chan struct{}, 1)
	h.mu.Lock()
	if h.waiters[id] == nil {
		h.waiters[id] = map[chan struct{}]struct{}{}
	}
	h.waiters[id][ch] = struct{}{}
	h.mu.Unlock()
	return ch, func() {
		h.mu.Lock()
		delete(h.waiters[id], ch)
		if len(h.waiters[id]) == 0 {
			delete(h.waiters, id)
		}
		h.mu.Unlock()
	}
}

// Close unsubscribes.
func (h *DoneHub) Close() error { return h.sub.Unsubscribe() }
