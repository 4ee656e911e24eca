// Package worker wires the worker process: Postgres, migrations, NATS, the job consumer, the
// provider registry and channel router, the bounded worker pool, the overdue-job sweeper and
// the operations endpoints (/healthz, /readyz, /metrics).
package worker
