// Package jobs is the contract between the ingress and the workers: the job's wire form,
// the queue (stream, consumer, publisher, cancels), the reply protocol (Replier on the
// worker's side, Mux and Assembler on the ingress's), the done events async waiters listen
// for (DoneHub), and the API's error vocabulary (APIError and its named constructors).
// It runs no jobs itself: the worker engine is internal/worker, the router pkg/route, the
// webhook dispatcher pkg/webhook.
//
// # Jobs on the stream
//
// A job is one message on a JetStream work-queue stream, published with Nats-Msg-Id = job
// id (so a retried publish is deduplicated) and pulled by one durable consumer that every
// worker process shares. Its wire form is binary (wire.go): a version byte, flags, the two
// times, the short fields, then the request body as the caller sent it, uncopied:
//
//	0x01 | flags | varint created_at (unix ns) | varint deadline (unix ns)
//	     | uvarint-prefixed id, key_id, endpoint, model, reply | body
//
// Decode still reads the JSON form of earlier ingresses, so jobs they queued still run.
//
// # Replies
//
// An answer travels on core NATS to the reply subject of the ingress that waits for it:
// zero or more sequenced parts (stream events, or slices of a body too large for one
// message), then one final message. Each message carries its framing at the start of the
// payload (reply.go):
//
//	0x01 | kind | flags | uvarint seq | uvarint attempt | uvarint-prefixed event name | data
//
// and a final's data is its Final (outcome, status, usage, cost, error) followed, when it
// fits, by the whole answer, so a typical answer is one message. The Assembler owns the
// rules for what arrives out of order, twice, from an earlier delivery, or not at all.
//
// Invariants:
//   - The final result is in Postgres before the final message is sent and before the job
//     is acked, so a lost reply or a crashed worker loses nothing: a redelivery replays it.
//   - A stream with a hole, or one whose worker changed mid-way, ends in an error event,
//     never in a clean end.
//   - The timing rules the ingress and the worker must agree on (MaxAge, MaxDeliver, the
//     record grace, the overdue sweep, the slot hold) derive from QueueConfig.
//   - Every goroutine the package starts is waited for by the function that started it.
package jobs
