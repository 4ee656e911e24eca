// Package store is Sluice's Postgres layer (pgx v5): API keys, upstream channels, model
// prices, jobs, the usage ledger and spend per key.
//
// Invariants:
//   - Delivery of jobs is at least once, so every write about a job is idempotent by job id:
//     FinishJob changes a job and charges its key at most once, however often it is called.
//   - Only a SHA-256 hash of an API key's secret is stored; upstream API keys and webhook
//     secrets are sealed with AES-GCM (Sealer) before they reach the database.
//   - No pgx type or error leaves the package: pgx.ErrNoRows becomes ErrNotFound.
package store
