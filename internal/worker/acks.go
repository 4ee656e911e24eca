package worker

import (
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// acks holds back the acks of jobs whose outcomes are recorded, so that each goes out in the
// same socket write as this process's next NATS message (the next outcome's publish calls
// flush first) instead of costing NATS and this process a wake-up of its own: at a low rate a
// job's ack otherwise travels alone, a millisecond after its outcome. An ack waits at most
// ackLinger. Holding one back is safe: the outcome is durable before its job is acked, so an
// ack that is late, or lost with the process, costs one redelivery, which replays the
// recorded outcome.
type acks struct {
	log     *slog.Logger
	mu      sync.Mutex
	pending []jetstream.Msg
	timer   *time.Timer    // runs flush ackLinger after the first pending ack
	closed  bool           // after close: ack at once
	sending sync.WaitGroup // flushes that took acks and have not sent them yet
}

// ackLinger bounds how long an ack is held back; ackBatch how many are.
const (
	ackLinger = 5 * time.Millisecond
	ackBatch  = 256
)

func newAcks(log *slog.Logger) *acks { return &acks{log: log} }

// add acks msg within ackLinger.
func (a *acks) add(msg jetstream.Msg) {
	a.mu.Lock()
	if a.closed {
		a.mu.Unlock()
		a.send([]jetstream.Msg{msg})
		return
	}
	a.pending = append(a.pending, msg)
	if len(a.pending) == 1 {
		if a.timer == nil {
			a.timer = time.AfterFunc(ackLinger, a.flush)
		} else {
			a.timer.Reset(ackLinger)
		}
	}
	full := len(a.pending) >= ackBatch
	a.mu.Unlock()
	if full {
		a.flush()
	}
}

// flush sends the pending acks now.
func (a *acks) flush() {
	a.mu.Lock()
	msgs := a.pending
	a.pending = nil
	if len(msgs) == 0 {
		a.mu.Unlock()
		return
	}
	if a.timer != nil {
		a.timer.Stop()
	}
	a.sending.Add(1) // under mu: close, which takes mu after this, waits for the send
	a.mu.Unlock()
	defer a.sending.Done()
	a.send(msgs)
}

func (a *acks) send(msgs []jetstream.Msg) {
	for _, m := range msgs {
		// A plain ack, as apply's: see actAck.
		if err := m.Ack(); err != nil {
			a.log.Warn("settle delivery", "action", "ack", "err", err)
		}
	}
}

// close sends what is pending, waits for a timer's flush that has taken acks to send them,
// and acks at once from then on. The pool calls it once no job is running, before it
// returns, so no ack is sent after the pool (and then its connection) is done.
func (a *acks) close() {
	a.mu.Lock()
	a.closed = true
	if a.timer != nil {
		a.timer.Stop()
	}
	msgs := a.pending
	a.pending = nil
	a.mu.Unlock()
	a.send(msgs)
	a.sending.Wait()
}
