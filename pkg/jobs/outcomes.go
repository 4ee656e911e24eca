package jobs

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/pkg/store"
	"github.com/sluicehq/sluice/pkg/tokens"
)

// The outcomes stream is where a job's outcome becomes durable: a worker publishes it and
// awaits the stream's ack before it replies and acks the job, and settlers (in every worker
// process) write the outcomes to Postgres in large batches, idempotently, then ack them.
// So Postgres is off the reply path, and a Postgres outage delays the ledger instead of
// the answers. An outcome is deduplicated by its job id (the first outcome of a job wins,
// as in Postgres), and stays in the stream until it is settled.
const (
	OutcomeStreamName   = "SLUICE_OUTCOMES"
	OutcomeConsumerName = "sluice-settlers"
	outcomePrefix       = "sluice.outcomes."
)

// EnsureOutcomeStream creates the outcomes stream or updates it to cfg (its MaxBytes,
// DedupWindow and Replicas, which both binaries share). It is idempotent, and leaves a
// stream that already has this configuration alone: every update wakes the ingresses'
// waiters to look in the store (republish.go), so a process start must not make one.
func EnsureOutcomeStream(ctx context.Context, js jetstream.JetStream, cfg QueueConfig) (jetstream.Stream, error) {
	want := outcomeStreamConfig(cfg.WithDefaults())
	if s, err := js.Stream(ctx, OutcomeStreamName); err == nil && sameOutcomeConfig(s.CachedInfo().Config, want) {
		return s, nil
	}
	s, err := js.CreateOrUpdateStream(ctx, want)
	if err != nil {
		return nil, fmt.Errorf("ensure stream %s: %w", OutcomeStreamName, err)
	}
	return s, nil
}

// sameOutcomeConfig reports whether have, a stream's configuration as the server gives it
// (defaults filled in), holds every setting of want that EnsureOutcomeStream sets.
func sameOutcomeConfig(have, want jetstream.StreamConfig) bool {
	rp := func(r *jetstream.RePublish) jetstream.RePublish {
		if r == nil {
			return jetstream.RePublish{}
		}
		return *r
	}
	return have.Description == want.Description && slices.Equal(have.Subjects, want.Subjects) &&
		have.Retention == want.Retention && have.Storage == want.Storage && have.Replicas == want.Replicas &&
		have.MaxMsgs == want.MaxMsgs && have.MaxBytes == want.MaxBytes && have.Discard == want.Discard &&
		have.Duplicates == want.Duplicates && rp(have.RePublish) == rp(want.RePublish)
}

func outcomeStreamConfig(cfg QueueConfig) jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:        OutcomeStreamName,
		Description: "Sluice job outcomes not yet written to Postgres",
		Subjects:    []string{outcomePrefix + ">"},
		// An outcome is removed once settled; none is ever dropped for age: the ledger
		// depends on it. Full (Postgres away for long): workers settle directly.
		Retention: jetstream.WorkQueuePolicy,
		Storage:   jetstream.FileStorage,
		Replicas:  cfg.Replicas,
		// No count cap: while Postgres is away outcomes pile up at the answer rate, and a full
		// stream would send every answer back to waiting for Postgres. Bytes are capped by
		// QUEUE_MAX_BYTES, if set, and by the server's JetStream storage.
		MaxMsgs:    -1,
		MaxBytes:   maxBytes(cfg.MaxBytes),
		Discard:    jetstream.DiscardNew,
		Duplicates: cfg.DedupWindow,
		// Once stored, the outcome of a sync job whose ingress asked for it is sent on to
		// that ingress's reply subject: the answer and the proof that it is durable in one
		// message (republish.go).
		RePublish: &jetstream.RePublish{Source: answerSource, Destination: answerDestination},
	}
}

// EnsureOutcomeConsumer creates the settlers' durable consumer or updates it to cfg (its
// AckWait, MaxAckPending and Replicas, which the worker sets). It is idempotent.
func EnsureOutcomeConsumer(ctx context.Context, js jetstream.JetStream, cfg QueueConfig) (jetstream.Consumer, error) {
	cfg = cfg.WithDefaults()
	c, err := js.CreateOrUpdateConsumer(ctx, OutcomeStreamName, jetstream.ConsumerConfig{
		Durable:       OutcomeConsumerName,
		Description:   "Sluice settlers",
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       cfg.AckWait,
		MaxDeliver:    -1, // an outcome is retried until Postgres takes it
		MaxAckPending: cfg.MaxAckPending,
		FilterSubject: outcomePrefix + ">",
		Replicas:      cfg.Replicas,
	})
	if err != nil {
		return nil, fmt.Errorf("ensure consumer %s: %w", OutcomeConsumerName, err)
	}
	return c, nil
}

// ErrOutcomeTooLarge means an outcome does not fit in one NATS message; its worker settles
// it in Postgres directly.
var ErrOutcomeTooLarge = errors.New("outcome does not fit in one NATS message")

// Outcomes publishes job outcomes and reads back the ones not yet settled.
type Outcomes struct {
	nc      *nats.Conn
	js      jetstream.JetStream
	stream  jetstream.Stream
	timeout time.Duration
	// republishes is whether the stream, as last seen, republishes answers (republish.go).
	republishes atomic.Bool
}

// NewOutcomes returns an Outcomes on the stream EnsureOutcomeStream returned; each publish
// waits at most timeout for the stream's ack.
func NewOutcomes(nc *nats.Conn, js jetstream.JetStream, stream jetstream.Stream, timeout time.Duration) *Outcomes {
	p := &Outcomes{nc: nc, js: js, stream: stream, timeout: timeout}
	if stream != nil {
		p.noteConfig(stream.CachedInfo())
	}
	return p
}

// outcomeVersion opens an outcome message: its layout, so a later layout can be told apart.
const outcomeVersion = 1

// Flags of an outcome message.
const (
	outUsage = 1 << iota
	outEstimated
	outCharge
	outJob
	outAsync
	outHoldsSlot
	outCacheHit
	outBatch // the job is a batch line: its batch id, custom id and line follow the metadata
)

// EncodeOutcome is the message data of o, in a binary layout (the response and error JSON
// are carried as they are, neither validated nor re-encoded):
//
//	version | flags | uvarint status code | job id | status | channel id | upstream model |
//	error | response [| varint prompt, completion tokens]
//	[| key id | endpoint | model | webhook url | varint created, deadline (unix ns) |
//	   uvarint attempt | varint reserved tokens | request | uvarint metadata pairs, key | value …
//	   [| batch id | custom id | uvarint line, if outBatch]]
//
// with each string and byte field uvarint-length-prefixed.
func EncodeOutcome(o *store.Outcome) ([]byte, error) {
	var flags byte
	if o.Usage != nil {
		flags |= outUsage
		if o.Usage.Estimated {
			flags |= outEstimated
		}
	}
	if o.Charge {
		flags |= outCharge
	}
	if o.CacheHit {
		flags |= outCacheHit
	}
	j := o.Job
	if j != nil {
		flags |= outJob
		if j.Async {
			flags |= outAsync
		}
		if j.HoldsSlot {
			flags |= outHoldsSlot
		}
		if j.BatchID != "" {
			flags |= outBatch
		}
	}
	b := make([]byte, 0, 64+len(o.Response)+len(o.Error))
	b = append(b, outcomeVersion, flags)
	b = binary.AppendUvarint(b, uint64(max(o.StatusCode, 0)))
	for _, s := range [...]string{o.JobID, o.Status, o.ChannelID, o.UpstreamModel} {
		b = appendString(b, s)
	}
	b = appendBytes(b, o.Error)
	b = appendBytes(b, o.Response)
	if u := o.Usage; u != nil {
		b = binary.AppendVarint(b, u.PromptTokens)
		b = binary.AppendVarint(b, u.CompletionTokens)
	}
	if j != nil {
		for _, s := range [...]string{j.KeyID, j.Endpoint, j.Model, j.WebhookURL} {
			b = appendString(b, s)
		}
		b = binary.AppendVarint(b, j.CreatedAt.UnixNano())
		b = binary.AppendVarint(b, j.Deadline.UnixNano())
		b = binary.AppendUvarint(b, uint64(max(j.Attempt, 0)))
		b = binary.AppendVarint(b, j.ReservedTokens)
		b = appendBytes(b, j.Request)
		b = binary.AppendUvarint(b, uint64(len(j.Metadata)))
		for k, v := range j.Metadata {
			b = appendString(appendString(b, k), v)
		}
		if j.BatchID != "" {
			b = appendString(appendString(b, j.BatchID), j.CustomID)
			b = binary.AppendUvarint(b, uint64(max(j.BatchLine, 0)))
		}
	}
	return b, nil
}

func appendBytes(b, v []byte) []byte {
	return append(binary.AppendUvarint(b, uint64(len(v))), v...)
}

// DecodeOutcome reads what EncodeOutcome wrote; it fails on anything else, trailing bytes
// included. The outcome's byte fields share data's memory.
func DecodeOutcome(data []byte) (store.Outcome, error) {
	r := wireReader{b: data}
	if r.byte() != outcomeVersion {
		return store.Outcome{}, errors.New("decode outcome: not an outcome message")
	}
	flags := r.byte()
	o := store.Outcome{StatusCode: r.int(), JobID: r.string(), Status: r.string(), ChannelID: r.string(),
		UpstreamModel: r.string(), Error: r.bytes(), Response: r.bytes(), Charge: flags&outCharge != 0,
		CacheHit: flags&outCacheHit != 0}
	if flags&outUsage != 0 {
		o.Usage = &tokens.Usage{PromptTokens: r.varint(), CompletionTokens: r.varint(), Estimated: flags&outEstimated != 0}
	}
	if flags&outJob != 0 {
		j := &store.NewJob{ID: o.JobID, KeyID: r.string(), Endpoint: r.string(), Model: r.string(), WebhookURL: r.string(),
			Async: flags&outAsync != 0, HoldsSlot: flags&outHoldsSlot != 0}
		j.CreatedAt, j.Deadline = time.Unix(0, r.varint()).UTC(), time.Unix(0, r.varint()).UTC()
		j.Attempt = r.int()
		j.ReservedTokens = r.varint()
		j.Request = r.bytes()
		if n := r.int(); n > 0 && n <= len(r.b) {
			j.Metadata = make(map[string]string, n)
			for range n {
				k := r.string()
				j.Metadata[k] = r.string()
			}
		} else if n != 0 {
			r.bad = true
		}
		if flags&outBatch != 0 {
			j.BatchID, j.CustomID, j.BatchLine = r.string(), r.string(), r.int()
		}
		o.Job = j
	}
	if r.bad || len(r.b) > 0 || o.JobID == "" || o.Status == "" { // every flag bit has a meaning
		return store.Outcome{}, errors.New("decode outcome: malformed")
	}
	return o, nil
}

// Publish makes o durable on the outcomes stream. duplicate is true when an outcome of the
// same job is already there (within the dedup window): that one stands, not o. A try whose
// ack does not come (a leader election, a reconnect) is repeated with the same message id
// within the timeout, so a duplicate may also be this call's own earlier try that was
// stored but not acknowledged; either way an outcome of the job is recorded, and the caller
// answers from it as from any recorded outcome.
func (p *Outcomes) Publish(ctx context.Context, o *store.Outcome) (duplicate bool, err error) {
	return p.PublishWith(ctx, o, nil)
}

// PublishWith is Publish with h as the message's headers: what the settler's log lines
// about the outcome show of its job (request id, trace context). Nil: none. h must be the
// caller's to give: the message id header is added to it.
func (p *Outcomes) PublishWith(ctx context.Context, o *store.Outcome, h nats.Header) (duplicate bool, err error) {
	data, err := EncodeOutcome(o)
	if err != nil {
		return false, err
	}
	if int64(len(data)) > p.nc.MaxPayload()-1024 {
		return false, ErrOutcomeTooLarge
	}
	return p.publish(ctx, outcomePrefix+o.JobID, o.JobID, data, h)
}

func (p *Outcomes) publish(ctx context.Context, subject, id string, data []byte, h nats.Header) (duplicate bool, err error) {
	ctx, cancel := context.WithTimeout(ctx, p.timeout)
	defer cancel()
	duplicate, _, err = publishRetry(ctx, p.js, &nats.Msg{Subject: subject, Data: data, Header: h}, id, OutcomeStreamName)
	if err != nil {
		return false, fmt.Errorf("publish outcome of %s: %w", id, err)
	}
	return duplicate, nil
}

// Pending returns job id's outcome if it is in the stream, not yet settled; nil if there is
// none (never published, or settled: then Postgres has it). A sync job's outcome may be
// under its answer subject (republish.go), found by the job id's wildcard.
func (p *Outcomes) Pending(ctx context.Context, id string) (*store.Outcome, error) {
	ctx, cancel := context.WithTimeout(ctx, p.timeout)
	defer cancel()
	m, err := p.stream.GetLastMsgForSubject(ctx, outcomePrefix+id)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		m, err = p.stream.GetLastMsgForSubject(ctx, outcomePrefix+id+".>")
	}
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read outcome of %s: %w", id, err)
	}
	o, err := DecodeOutcome(m.Data)
	if err != nil {
		return nil, err
	}
	return &o, nil
}

// OutcomeRow is o as the job row it becomes once settled, for answering from a pending
// outcome: terminal, without a cost (that is priced when it is settled).
func OutcomeRow(o *store.Outcome, keyID string) store.Job {
	now := time.Now()
	row := store.Job{ID: o.JobID, KeyID: keyID, Status: o.Status, StatusCode: &o.StatusCode, Response: o.Response,
		Error: o.Error, FinishedAt: &now}
	if o.Job != nil {
		row.Endpoint, row.Model, row.Async, row.CreatedAt, row.Deadline = o.Job.Endpoint, o.Job.Model, o.Job.Async,
			o.Job.CreatedAt, o.Job.Deadline
	}
	if u := o.Usage; u != nil {
		row.PromptTokens, row.CompletionTokens = &u.PromptTokens, &u.CompletionTokens
	}
	return row
}
