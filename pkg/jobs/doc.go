// Package jobs carries relay jobs from the ingress to the workers and their answers back.
//
// A job is one JSON message on a JetStream work-queue stream, published with Nats-Msg-Id =
// job id (so a retried publish is deduplicated) and pulled by one durable consumer that every
// worker process shares. Its answer travels on core NATS to the reply subject of the ingress
// that waits for it: zero or more sequenced parts (stream events or slices of a large body),
// then one final message. The final result is always in Postgres before the final message is
// sent and before the job is acked, so a lost reply or a crashed worker loses nothing.
//
// Invariants:
//   - A worker process never holds more messages than it has free slots (Fetch(freeSlots)).
//   - Every goroutine the package starts is waited for by the function that started it.
//   - A job is charged at most once however often it is delivered (store.FinishJob).
package jobs
