package jobs

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Subjects and names.
const (
	StreamName   = "SLUICE_JOBS"
	ConsumerName = "sluice-workers"
	// jobPrefix + key id is a job's subject: the stream caps each key's queued jobs by
	// its subject (QueueConfig.MaxQueuedPerKey).
	jobPrefix    = "sluice.jobs.run."
	replyPrefix  = "sluice.reply."
	cancelPrefix = "sluice.cancel."
	// DonePrefix + job id is published when a job reaches a terminal state.
	DonePrefix = "sluice.done."
	// CancelSubjects is what a worker subscribes to for the cancels of CancelJob.
	CancelSubjects = cancelPrefix + "*"
)

// Cancel reasons carried in a cancel message.
const (
	// CancelUser: the API cancelled the job. It ends canceled, charged what the upstream
	// had produced when it stopped (nothing if it had not started answering).
	CancelUser = "user"
	// CancelClientGone: a sync caller left, or the ingress ended its answer itself; charged
	// the same way.
	CancelClientGone = "client_gone"
)

// Defaults of QueueConfig.
const (
	DefaultJobTimeout  = 15 * time.Minute
	DefaultMaxDeliver  = 10
	DefaultRecordGrace = 5 * time.Minute
	// DefaultMaxQueuedPerKey is one key's share of the default MaxJobs (100,000): a tenth, so
	// one tenant cannot fill the queue for all.
	DefaultMaxQueuedPerKey = 10_000
)

// QueueConfig sizes the job stream and its consumer. Zero fields take the defaults.
type QueueConfig struct {
	// MaxJobs caps queued jobs; beyond it a publish fails with ErrQueueFull (discard new).
	MaxJobs int64
	// MaxBytes caps the queued jobs' bytes (bodies included) the same way; 0 or less: no cap.
	MaxBytes int64
	// MaxQueuedPerKey caps one key's jobs in the stream (queued or running); beyond it a
	// publish of that key fails with ErrKeyQueueFull. Exact across ingresses: the stream
	// enforces it per subject. Zero: DefaultMaxQueuedPerKey.
	MaxQueuedPerKey int64
	// MaxAge drops a job the workers never took (a safety net; deadlines end jobs sooner).
	// Zero: twice JobTimeout, and at least 2 hours.
	MaxAge time.Duration
	// JobTimeout is the longest a job may run (JOB_TIMEOUT).
	JobTimeout time.Duration
	// DedupWindow is how long a re-published job id is recognised as a duplicate.
	DedupWindow time.Duration
	// AckWait is how long a worker may hold a job without a progress heartbeat.
	AckWait time.Duration
	// MaxAckPending caps jobs held by all workers together (Σ WORKER_CONCURRENCY + headroom).
	MaxAckPending int
	// MaxDeliver caps deliveries of one job; the last delivery always ends the job.
	MaxDeliver int
	// Replicas of the stream (1 for a single server, 3 in a cluster).
	Replicas int
	// RecordGrace is how long past a job's deadline its worker keeps trying to record the
	// outcome while Postgres is unavailable, before handing the job back to the queue. The
	// overdue sweep and the concurrency slot's expiry are derived from it (SweepAfter,
	// SlotHold), so the three cannot disagree.
	RecordGrace time.Duration
}

// SweepAfter is how long past its deadline a job that is still not terminal is ended by the
// overdue sweep: after its worker has stopped trying to record it.
func (c QueueConfig) SweepAfter() time.Duration { return c.WithDefaults().RecordGrace + time.Minute }

// SlotHold is how long past its deadline a job's concurrency slot is held if the job's end
// never frees it: after the sweep has had its chance (it runs once a minute).
func (c QueueConfig) SlotHold() time.Duration { return c.SweepAfter() + time.Minute }

// WithDefaults fills the unset fields.
func (c QueueConfig) WithDefaults() QueueConfig {
	if c.JobTimeout <= 0 {
		c.JobTimeout = DefaultJobTimeout
	}
	if c.RecordGrace <= 0 {
		c.RecordGrace = DefaultRecordGrace
	}
	if c.MaxJobs <= 0 {
		c.MaxJobs = 100_000
	}
	if c.MaxQueuedPerKey <= 0 {
		c.MaxQueuedPerKey = DefaultMaxQueuedPerKey
	}
	if c.MaxAge <= 0 {
		c.MaxAge = max(2*time.Hour, 2*c.JobTimeout)
	}
	if c.DedupWindow <= 0 {
		c.DedupWindow = 20 * time.Minute
	}
	c.DedupWindow = min(c.DedupWindow, c.MaxAge)
	if c.AckWait <= 0 {
		c.AckWait = 60 * time.Second
	}
	if c.MaxAckPending <= 0 {
		c.MaxAckPending = 4096
	}
	if c.MaxDeliver <= 0 {
		c.MaxDeliver = DefaultMaxDeliver
	}
	if c.Replicas <= 0 {
		c.Replicas = 1
	}
	return c
}

// EnsureStream creates the job stream or updates it to cfg. It is idempotent.
func EnsureStream(ctx context.Context, js jetstream.JetStream, cfg QueueConfig) (jetstream.Stream, error) {
	cfg = cfg.WithDefaults()
	s, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:        StreamName,
		Description: "Sluice relay jobs",
		Subjects:    []string{"sluice.jobs.>"},
		Retention:   jetstream.WorkQueuePolicy,
		Storage:     jetstream.FileStorage,
		Replicas:    cfg.Replicas,
		MaxMsgs:     cfg.MaxJobs,
		MaxBytes:    maxBytes(cfg.MaxBytes),
		Discard:     jetstream.DiscardNew,
		// One subject per key: a key past its cap is refused, not the oldest job dropped.
		MaxMsgsPerSubject:    cfg.MaxQueuedPerKey,
		DiscardNewPerSubject: true,
		MaxAge:               cfg.MaxAge,
		Duplicates:           cfg.DedupWindow,
	})
	if err != nil {
		return nil, fmt.Errorf("ensure stream %s: %w", StreamName, err)
	}
	return s, nil
}

// maxBytes is the stream's MaxBytes for a configured cap: JetStream's -1 for none.
func maxBytes(n int64) int64 {
	if n <= 0 {
		return -1
	}
	return n
}

// EnsureConsumer creates the workers' durable pull consumer or updates it to cfg. It is
// idempotent; every worker process binds to the same consumer.
func EnsureConsumer(ctx context.Context, js jetstream.JetStream, cfg QueueConfig) (jetstream.Consumer, error) {
	cfg = cfg.WithDefaults()
	c, err := js.CreateOrUpdateConsumer(ctx, StreamName, jetstream.ConsumerConfig{
		Durable:       ConsumerName,
		Description:   "Sluice worker pool",
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       cfg.AckWait,
		MaxDeliver:    cfg.MaxDeliver,
		MaxAckPending: cfg.MaxAckPending,
		FilterSubject: "sluice.jobs.>",
		Replicas:      cfg.Replicas,
	})
	if err != nil {
		return nil, fmt.Errorf("ensure consumer %s: %w", ConsumerName, err)
	}
	return c, nil
}

// Errors from Publish.
var (
	// ErrQueueFull means the stream is at MaxJobs or MaxBytes.
	ErrQueueFull = errors.New("job queue is full")
	// ErrKeyQueueFull means the job's key has MaxQueuedPerKey jobs queued or running.
	ErrKeyQueueFull = errors.New("too many jobs queued for this key")
	// ErrUnavailable means NATS is not reachable right now.
	ErrUnavailable = errors.New("job queue unavailable")
	// ErrTooLarge means the job does not fit in one NATS message.
	ErrTooLarge = errors.New("job larger than the NATS max payload")
)

// Publisher puts jobs on the stream.
type Publisher struct {
	nc      *nats.Conn
	js      jetstream.JetStream
	timeout time.Duration
	observe func(d time.Duration, err error) // SetObserver's; nil: none
}

// SetObserver has fn called with how long each published job waited for its ack (retries
// included) and the publish's error, for a latency metric. Call it before publishing.
func (p *Publisher) SetObserver(fn func(d time.Duration, err error)) { p.observe = fn }

func (p *Publisher) observed(began time.Time, err error) {
	if p.observe != nil {
		p.observe(time.Since(began), err)
	}
}

// NewPublisher returns a Publisher; each publish waits at most timeout for its ack.
func NewPublisher(nc *nats.Conn, js jetstream.JetStream, timeout time.Duration) *Publisher {
	if timeout <= 0 {
		timeout = 5 * time.Second
	}
	return &Publisher{nc: nc, js: js, timeout: timeout}
}

// Publish stores the job in the stream with Nats-Msg-Id = job id. The job is accepted once
// Publish returns nil. duplicate is true if a job with that id was already stored (within the
// dedup window) before this call. It fails fast with ErrUnavailable while NATS is
// disconnected, and with ErrQueueFull when the stream is full. A try whose ack does not come
// (the stream is electing a leader, or the connection moves to another server) is repeated
// with the same id, so the stream stores the job once, for as long as the publisher's
// timeout, the job's deadline and ctx allow.
func (p *Publisher) Publish(ctx context.Context, j *Job) (duplicate bool, err error) {
	if !p.nc.IsConnected() {
		return false, ErrUnavailable
	}
	msg, err := p.message(j)
	if err != nil {
		return false, err
	}
	ctx, cancel := p.budget(ctx, j)
	defer cancel()
	began := time.Now()
	duplicate, retried, err := publishRetry(ctx, p.js, msg, j.ID, "")
	p.observed(began, err)
	if err != nil {
		return false, publishErr(j, err)
	}
	// A duplicate on a later try is (or may be) this call's own earlier try.
	return duplicate && !retried, nil
}

// budget bounds a publish of j: the publisher's timeout, and no later than j's deadline.
func (p *Publisher) budget(ctx context.Context, j *Job) (context.Context, context.CancelFunc) {
	d := p.timeout
	if !j.Deadline.IsZero() {
		d = max(min(d, time.Until(j.Deadline)), time.Millisecond)
	}
	return context.WithTimeout(ctx, d)
}

// PublishAll is Publish for many jobs at once: it sends them all and then waits for their
// acks, so a batch costs about one round trip rather than one each. A job whose ack did not
// come is tried again alone, as Publish does, within the same time. errs[i] is job i's
// result; a job is accepted once its error is nil.
func (p *Publisher) PublishAll(ctx context.Context, js []*Job) (errs []error) {
	errs = make([]error, len(js))
	if !p.nc.IsConnected() {
		for i := range errs {
			errs[i] = ErrUnavailable
		}
		return errs
	}
	ctx, cancel := context.WithTimeout(ctx, p.timeout)
	defer cancel()
	began := time.Now()
	defer func() {
		for _, err := range errs {
			p.observed(began, err)
		}
	}()
	futures := make([]jetstream.PubAckFuture, len(js))
	msgs := make([]*nats.Msg, len(js))
	raw := make([]error, len(js)) // the unclassified error of a failed first try
	for i, j := range js {
		msg, err := p.message(j)
		if err == nil {
			msgs[i] = msg
			futures[i], err = p.js.PublishMsgAsync(msg, jetstream.WithMsgID(j.ID))
		}
		if err != nil {
			errs[i], raw[i] = publishErr(j, err), err
		}
	}
	for i, f := range futures {
		if f == nil {
			continue
		}
		select {
		case <-f.Ok():
		case err := <-f.Err():
			errs[i], raw[i] = publishErr(js[i], err), err
		case <-ctx.Done():
			errs[i], raw[i] = publishErr(js[i], ctx.Err()), context.DeadlineExceeded
		}
	}
	for i, err := range raw {
		if err == nil || msgs[i] == nil || !retryable(err) || ctx.Err() != nil {
			continue
		}
		if _, _, err := publishRetry(ctx, p.js, msgs[i], js[i].ID, ""); err != nil {
			errs[i] = publishErr(js[i], err)
		} else {
			errs[i] = nil
		}
	}
	return errs
}

// message is j's stream message, or ErrTooLarge.
func (p *Publisher) message(j *Job) (*nats.Msg, error) {
	data, err := j.Encode()
	if err != nil {
		return nil, fmt.Errorf("encode job %s: %w", j.ID, err)
	}
	if j.KeyID == "" || strings.ContainsAny(j.KeyID, ".*> \t\r\n") {
		return nil, fmt.Errorf("job %s: key id %q is not a subject token", j.ID, j.KeyID)
	}
	if int64(len(data)) > p.nc.MaxPayload()-1024 { // headers (Nats-Msg-Id) ride along
		return nil, ErrTooLarge
	}
	if j.ReplyByOutcome {
		if j.Header == nil {
			j.Header = nats.Header{}
		}
		j.Header.Set(HeaderAnswer, answerByOutcome)
	}
	if j.Batch != "" {
		if strings.ContainsAny(j.Batch, ".*> \t\r\n") {
			return nil, fmt.Errorf("job %s: batch id %q is not a subject token", j.ID, j.Batch)
		}
		return &nats.Msg{Subject: batchPrefix + j.Batch, Data: data, Header: j.Header}, nil
	}
	return &nats.Msg{Subject: jobPrefix + j.KeyID, Data: data, Header: j.Header}, nil
}

// publishErr classifies a failed publish of j.
func publishErr(j *Job, err error) error {
	var apiErr *jetstream.APIError
	switch {
	case errors.As(err, &apiErr) && strings.Contains(apiErr.Description, "per subject"):
		return fmt.Errorf("%w: %v", ErrKeyQueueFull, err)
	// The server answers a full discard-new stream with 503 / err_code 10077 ("maximum
	// messages exceeded" or "maximum bytes exceeded"); nats.go has no named constant for it.
	// 503 / 10008 is a cluster without a leader for the stream: unavailable, not full.
	case errors.As(err, &apiErr) && (apiErr.ErrorCode == 10077 || apiErr.Code == 503 && apiErr.ErrorCode != jsClusterNotAvail):
		return fmt.Errorf("%w: %v", ErrQueueFull, err)
	case errors.Is(err, nats.ErrMaxPayload), errors.Is(err, ErrTooLarge):
		return ErrTooLarge
	}
	return fmt.Errorf("%w: publish job %s: %v", ErrUnavailable, j.ID, err)
}

// CancelJob asks whichever worker runs job id to abort it, for reason CancelUser or
// CancelClientGone (core NATS: a worker that does not hold the job ignores it).
func CancelJob(nc *nats.Conn, id, reason string) error {
	return nc.Publish(cancelPrefix+id, []byte(reason))
}
