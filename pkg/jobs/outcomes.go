package jobs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
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

// EnsureOutcomeStream creates the outcomes stream or updates it to cfg (its MaxJobs,
// MaxBytes, DedupWindow and Replicas, which both binaries share). It is idempotent.
func EnsureOutcomeStream(ctx context.Context, js jetstream.JetStream, cfg QueueConfig) (jetstream.Stream, error) {
	cfg = cfg.WithDefaults()
	s, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:        OutcomeStreamName,
		Description: "Sluice job outcomes not yet written to Postgres",
		Subjects:    []string{outcomePrefix + ">"},
		// An outcome is removed once settled; none is ever dropped for age: the ledger
		// depends on it. Full (Postgres away for long): workers settle directly.
		Retention:  jetstream.WorkQueuePolicy,
		Storage:    jetstream.FileStorage,
		Replicas:   cfg.Replicas,
		MaxMsgs:    cfg.MaxJobs,
		MaxBytes:   maxBytes(cfg.MaxBytes),
		Discard:    jetstream.DiscardNew,
		Duplicates: cfg.DedupWindow,
	})
	if err != nil {
		return nil, fmt.Errorf("ensure stream %s: %w", OutcomeStreamName, err)
	}
	return s, nil
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

// outcomeWire is a store.Outcome as the outcomes stream carries it.
type outcomeWire struct {
	JobID         string          `json:"job_id"`
	Status        string          `json:"status"`
	StatusCode    int             `json:"status_code"`
	ChannelID     string          `json:"channel_id,omitempty"`
	UpstreamModel string          `json:"upstream_model,omitempty"`
	Response      json.RawMessage `json:"response,omitempty"`
	Error         json.RawMessage `json:"error,omitempty"`
	Usage         *usageWire      `json:"usage,omitempty"`
	Charge        bool            `json:"charge,omitempty"`
	CacheHit      bool            `json:"cache_hit,omitempty"`
	Job           *store.NewJob   `json:"job,omitempty"`
}

type usageWire struct {
	PromptTokens     int64 `json:"prompt_tokens"`
	CompletionTokens int64 `json:"completion_tokens"`
	Estimated        bool  `json:"estimated,omitempty"`
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
}

// NewOutcomes returns an Outcomes on the stream EnsureOutcomeStream returned; each publish
// waits at most timeout for the stream's ack.
func NewOutcomes(nc *nats.Conn, js jetstream.JetStream, stream jetstream.Stream, timeout time.Duration) *Outcomes {
	return &Outcomes{nc: nc, js: js, stream: stream, timeout: timeout}
}

// EncodeOutcome is the message data of o.
func EncodeOutcome(o *store.Outcome) ([]byte, error) {
	w := outcomeWire{JobID: o.JobID, Status: o.Status, StatusCode: o.StatusCode, ChannelID: o.ChannelID,
		UpstreamModel: o.UpstreamModel, Response: o.Response, Error: o.Error, Charge: o.Charge, Job: o.Job,
		CacheHit: o.CacheHit}
	if u := o.Usage; u != nil {
		w.Usage = &usageWire{PromptTokens: u.PromptTokens, CompletionTokens: u.CompletionTokens, Estimated: u.Estimated}
	}
	b, err := json.Marshal(&w)
	if err != nil {
		return nil, fmt.Errorf("encode outcome of %s: %w", o.JobID, err)
	}
	return b, nil
}

// DecodeOutcome reads an outcome message's data.
func DecodeOutcome(data []byte) (store.Outcome, error) {
	var w outcomeWire
	if err := json.Unmarshal(data, &w); err != nil {
		return store.Outcome{}, fmt.Errorf("decode outcome: %w", err)
	}
	if w.JobID == "" || w.Status == "" {
		return store.Outcome{}, errors.New("decode outcome: no job id or status")
	}
	o := store.Outcome{JobID: w.JobID, Status: w.Status, StatusCode: w.StatusCode, ChannelID: w.ChannelID,
		UpstreamModel: w.UpstreamModel, Response: w.Response, Error: w.Error, Charge: w.Charge, Job: w.Job,
		CacheHit: w.CacheHit}
	if u := w.Usage; u != nil {
		o.Usage = &tokens.Usage{PromptTokens: u.PromptTokens, CompletionTokens: u.CompletionTokens, Estimated: u.Estimated}
	}
	return o, nil
}

// Publish makes o durable on the outcomes stream. duplicate is true when an outcome of the
// same job was published first (within the dedup window): that one stands, not o.
func (p *Outcomes) Publish(ctx context.Context, o *store.Outcome) (duplicate bool, err error) {
	data, err := EncodeOutcome(o)
	if err != nil {
		return false, err
	}
	if int64(len(data)) > p.nc.MaxPayload()-1024 {
		return false, ErrOutcomeTooLarge
	}
	ctx, cancel := context.WithTimeout(ctx, p.timeout)
	defer cancel()
	ack, err := p.js.PublishMsg(ctx, &nats.Msg{Subject: outcomePrefix + o.JobID, Data: data},
		jetstream.WithMsgID(o.JobID), jetstream.WithExpectStream(OutcomeStreamName))
	if err != nil {
		return false, fmt.Errorf("publish outcome of %s: %w", o.JobID, err)
	}
	return ack.Duplicate, nil
}

// Pending returns job id's outcome if it is in the stream, not yet settled; nil if there is
// none (never published, or settled: then Postgres has it).
func (p *Outcomes) Pending(ctx context.Context, id string) (*store.Outcome, error) {
	ctx, cancel := context.WithTimeout(ctx, p.timeout)
	defer cancel()
	m, err := p.stream.GetLastMsgForSubject(ctx, outcomePrefix+id)
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
