// Package ingress is Sluice's HTTP API: it authenticates callers, validates their requests,
// publishes each one as a job, and answers with what the worker replies, streamed or whole.
//
// Invariants:
//   - The ingress holds no goroutine per job: a waiting request is its own handler goroutine,
//     and replies for every request arrive on one NATS subscription (jobs.Mux).
//   - Goroutines are bounded by configuration: at most MaxConns client connections are
//     accepted, and at most MaxWaiting requests wait for a job at once (beyond it: 503).
//   - Every error has the shape of ../shared/API.md; an unexpected one is a logged 500 that
//     carries no internal detail.
package ingress
