package worker

import (
	"log/slog"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// action is what happens to a delivery's message.
type action int

const (
	actSettle action = iota // record the outcome first, then decide again
	actAck                  // done: the outcome is in Postgres
	actNak                  // back to the queue, for this or another worker
	actTerm                 // never again: the job cannot be run or recorded
)

func (a action) String() string {
	return [...]string{"settle", "ack", "nak", "term"}[a]
}

// ending is where handling one delivery got to.
type ending int

const (
	endUnreadable  ending = iota // the message's metadata or job could not be read
	endStoreFailed               // Postgres did not take the job's start or outcome in time
	endShutdown                  // the worker stopped the job at shutdown
	endRan                       // the job ran (or was ended) and has an outcome to record
	endRecorded                  // the outcome is in Postgres, by this delivery or an earlier one
	endOverShare                 // the job's key holds its whole share of this worker's slots
)

// situation is what decide needs to know about one delivery.
type situation struct {
	end       ending
	delivered int  // the message's NumDelivered
	sent      int  // reply messages the caller already has from this attempt
	permanent bool // for endStoreFailed: Postgres refused the write for good
}

// decision is what to do with a delivery's message.
type decision struct {
	act    action
	delay  time.Duration // for actNak: redeliver after this long (0: at once)
	reason string        // for actTerm
}

// deliveryPolicy decides, in one place, every delivery's Ack, Nak or Term.
type deliveryPolicy struct {
	maxDeliver int // the consumer's MaxDeliver: the last delivery must end the job
}

// spareDeliveries is how many deliveries an over-share job keeps in hand for crashes and
// outages: with fewer left it runs over its key's share rather than risk its last delivery.
const spareDeliveries = 3

// overShareDelay is how long a job over its key's share waits before its next delivery:
// longer each time, up to 8 s.
func overShareDelay(delivered int) time.Duration {
	return min(time.Duration(delivered)*time.Second, 8*time.Second)
}

// storeRetryDelay is how long a job whose outcome could not be recorded waits before its
// redelivery: long enough not to spin while Postgres is away.
const storeRetryDelay = time.Second

// decide maps a situation to what happens to the message.
//
//   - An unreadable message is dropped: no delivery will read it better.
//   - A failed write goes back to the queue (the job's result was not recorded, so a later
//     delivery replays or reruns it), unless Postgres refused it for good or this was the
//     last delivery.
//   - At shutdown a job the caller has seen nothing of goes back to the queue whole, if a
//     delivery is left; otherwise its outcome (worker_shutdown) is recorded like any other.
//   - A job that ran is recorded first; once recorded it is acked. A lost ack costs one
//     redelivery, which finds the row finished and replays it.
//   - A job whose key already holds its share of the slots goes back to the queue, after a
//     growing delay, so the slot serves another key; with few deliveries left it runs anyway
//     (actSettle here: the caller runs it over the share).
func (p deliveryPolicy) decide(s situation) decision {
	last := s.delivered >= p.maxDeliver
	switch s.end {
	case endUnreadable:
		return decision{act: actTerm, reason: "malformed job"}
	case endStoreFailed:
		if s.permanent || last {
			return decision{act: actTerm, reason: "cannot record job"}
		}
		return decision{act: actNak, delay: storeRetryDelay}
	case endShutdown:
		if s.sent == 0 && !last {
			return decision{act: actNak}
		}
		return decision{act: actSettle}
	case endRan:
		return decision{act: actSettle}
	case endOverShare:
		if s.delivered+spareDeliveries >= p.maxDeliver {
			return decision{act: actSettle}
		}
		return decision{act: actNak, delay: overShareDelay(s.delivered)}
	default: // endRecorded
		return decision{act: actAck}
	}
}

// apply carries out d on msg. It must not be called with actSettle.
func apply(log *slog.Logger, msg jetstream.Msg, d decision) {
	var err error
	switch d.act {
	case actAck:
		// A plain ack, not DoubleAck: a lost ack costs one redelivery, which StartJobs turns
		// into a replay, and DoubleAck would not make delivery exactly-once anyway.
		err = msg.Ack()
	case actNak:
		if d.delay > 0 {
			err = msg.NakWithDelay(d.delay)
		} else {
			err = msg.Nak()
		}
	case actTerm:
		err = msg.TermWithReason(d.reason)
	default:
		panic("worker: apply " + d.act.String())
	}
	if err != nil {
		log.Warn("settle delivery", "action", d.act.String(), "err", err)
	}
}
