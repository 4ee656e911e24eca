package worker

import (
	"context"
	"errors"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/pkg/jobs"
)

// Causes of a job's context ending early.
var (
	// ErrShutdown: the worker is stopping; the job goes back to the queue.
	ErrShutdown = errors.New("worker shutting down")
	// ErrCanceled: the job was cancelled through the API; it ends canceled, charged what the
	// upstream had produced.
	ErrCanceled = errors.New("job canceled")
	// ErrClientGone: a sync caller went away; the job ends canceled and is charged what the
	// upstream already did.
	ErrClientGone = errors.New("client went away")
	// ErrJobTimeout: the job's deadline passed.
	ErrJobTimeout = errors.New("job deadline exceeded")
)

// maxCancelled bounds the remembered cancels.
const maxCancelled = 100_000

// held is the pool's memory of what it holds: the messages it must keep alive with
// heartbeats, the running jobs a cancel must reach, and cancels for jobs it did not hold
// (so a sync job whose caller left while it was queued is not run later). It has its own
// lock; the retry policy (attempt.go) cannot reach it.
type held struct {
	remember time.Duration // how long to remember a cancel for a job not held (the job timeout)

	mu        sync.Mutex
	running   map[string]context.CancelCauseFunc // job id → cancel
	beating   map[uint64]jetstream.Msg           // stream sequence → message held
	cancelled map[string]cancelNote              // job id → a cancel that came while not held
}

// cancelNote is a remembered cancel: why, and until when to remember it.
type cancelNote struct {
	cause error
	until time.Time
}

func newHeld(remember time.Duration) *held {
	return &held{remember: remember, running: map[string]context.CancelCauseFunc{},
		beating: map[uint64]jetstream.Msg{}, cancelled: map[string]cancelNote{}}
}

// hold starts heartbeats for msg; the returned func stops them (unless a later delivery of
// the same message has taken its place).
func (h *held) hold(seq uint64, msg jetstream.Msg) (release func()) {
	h.mu.Lock()
	h.beating[seq] = msg
	h.mu.Unlock()
	return func() {
		h.mu.Lock()
		if h.beating[seq] == msg {
			delete(h.beating, seq)
		}
		h.mu.Unlock()
	}
}

// cancelledBefore reports whether a cancel for id arrived while no one here ran it.
func (h *held) cancelledBefore(id string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	_, ok := h.cancelled[id]
	return ok
}

// run registers cancel as the way to stop job id; if a cancel already came (between the
// check at pick-up and now), cancel is called at once with its cause. The returned func
// unregisters it.
func (h *held) run(id string, cancel context.CancelCauseFunc) (done func()) {
	h.mu.Lock()
	h.running[id] = cancel
	late, ok := h.cancelled[id]
	h.mu.Unlock()
	if ok {
		cancel(late.cause)
	}
	return func() {
		h.mu.Lock()
		delete(h.running, id)
		h.mu.Unlock()
	}
}

// heartbeat sends InProgress for every held message every period, and forgets old cancels,
// from one goroutine, until ctx is done.
func (h *held) heartbeat(ctx context.Context, period time.Duration) {
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			h.mu.Lock()
			for _, m := range h.beating {
				_ = m.InProgress() // fire and forget; a lost one only risks a redelivery
			}
			for id, c := range h.cancelled {
				if now.After(c.until) {
					delete(h.cancelled, id)
				}
			}
			h.mu.Unlock()
		}
	}
}

// onCancel runs on the cancel subscription's goroutine.
func (h *held) onCancel(m *nats.Msg) {
	id := m.Subject[strings.LastIndexByte(m.Subject, '.')+1:]
	cause := ErrCanceled
	if string(m.Data) == jobs.CancelClientGone {
		cause = ErrClientGone
	}
	h.mu.Lock()
	cancel := h.running[id]
	if cancel == nil && len(h.cancelled) < maxCancelled {
		h.cancelled[id] = cancelNote{cause: cause, until: time.Now().Add(h.remember)}
	}
	h.mu.Unlock()
	if cancel != nil {
		cancel(cause)
	}
}
