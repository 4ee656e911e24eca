package jobs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/pkg/store"
)

// A sync job's whole answer can reach its ingress as the stored outcome itself. The worker
// publishes the outcome under a subject that carries the ingress's reply subject; once the
// outcomes stream has stored it, the server republishes it there (the stream's RePublish).
// So the message the ingress answers from is also the proof that the outcome is durable,
// and after the upstream's answer the reply path is one NATS crossing (worker → server →
// ingress) instead of two (the outcome's publish ack back to the worker, then its reply),
// with the answer's bytes sent once instead of twice. The worker still awaits the publish
// ack before it acks the job, off the reply path.
//
// Only whole answers go this way: a stream's events are sent as they come, and its final
// message must follow them in order, which a republication from the stream's leader, on
// another path through a cluster, would not promise.
const (
	answerMark = ".r." // sluice.outcomes.<job id>.r.<process>.<waiter>
	// answerSource and answerDestination map an answer subject to the reply subject
	// (sluice.reply.<process>.<waiter>) it carries.
	answerSource      = outcomePrefix + "*.r.*.*"
	answerDestination = replyPrefix + "{{wildcard(2)}}.{{wildcard(3)}}"
	// hdrStream is the header JetStream puts on a republished message: the stream's name.
	hdrStream = "Nats-Stream"
)

// republishRoom is what the server adds to a republished message, its headers
// (Nats-Stream, Nats-Subject, Nats-Sequence, Nats-Time-Stamp, Nats-Last-Sequence) beside the
// outcome's own, with room to spare: a larger outcome goes under its plain subject.
const republishRoom = 8 << 10

// Streams can be updated by any process: a process of a release from before the
// republication, starting during a rolling upgrade or after a rollback, ensures the outcomes
// stream without it. A worker then must not send answers by outcome, which would never reach
// their callers; so it follows the stream's configuration (WatchConfig), and the ingress's
// waiters look in the store after any update of the stream (Mux), in case some were sent
// while it changed.
const outcomeStreamUpdated = "$JS.EVENT.ADVISORY.STREAM.UPDATED." + OutcomeStreamName

// noteConfig records whether the stream info says answers are republished.
func (p *Outcomes) noteConfig(info *jetstream.StreamInfo) {
	on := false
	if info != nil && info.Config.RePublish != nil {
		rp := info.Config.RePublish
		on = rp.Source == answerSource && rp.Destination == answerDestination && !rp.HeadersOnly
	}
	p.republishes.Store(on)
}

// WatchConfig keeps PublishAnswer's view of the stream's configuration current: it reads it
// again at every update of the stream. Call the returned stop when done.
func (p *Outcomes) WatchConfig() (stop func(), err error) {
	if p.stream == nil {
		return nil, errors.New("watch the outcomes stream's configuration: no stream")
	}
	sub, err := p.nc.Subscribe(outcomeStreamUpdated, func(*nats.Msg) { p.refreshConfig() })
	if err != nil {
		return nil, fmt.Errorf("subscribe to updates of %s: %w", OutcomeStreamName, err)
	}
	p.refreshConfig() // an update before the subscription
	return func() { _ = sub.Unsubscribe() }, nil
}

func (p *Outcomes) refreshConfig() {
	ctx, cancel := context.WithTimeout(context.Background(), p.timeout)
	defer cancel()
	if info, err := p.stream.Info(ctx); err == nil {
		p.noteConfig(info)
	} else {
		p.republishes.Store(false) // unknown: reply the way that always arrives
	}
}

// answerSubject is the outcomes-stream subject under which job id's outcome is republished
// to reply, or "" if reply is not an ingress's reply subject.
func answerSubject(id, reply string) string {
	rest, ok := strings.CutPrefix(reply, replyPrefix)
	if !ok || strings.ContainsAny(rest, "*> \t\r\n") || id == "" || strings.ContainsAny(id, ".*> \t\r\n") {
		return ""
	}
	process, waiter, ok := strings.Cut(rest, ".")
	if !ok || process == "" || waiter == "" || strings.Contains(waiter, ".") {
		return ""
	}
	return outcomePrefix + id + answerMark + rest
}

// PublishAnswer is PublishWith for a sync job whose ingress waits on reply for its answer
// by outcome (Job.ReplyByOutcome): once stored, the outcome is republished to reply.
// republished is false when the outcome went under its plain subject instead (reply is not
// an ingress's, the stream does not republish, or the outcome leaves no room for the
// server's headers), or was a
// duplicate (an earlier outcome of the job stands, and was the one republished): then the
// caller replies itself, as after PublishWith.
func (p *Outcomes) PublishAnswer(ctx context.Context, o *store.Outcome, h nats.Header, reply string) (duplicate, republished bool, err error) {
	data, err := EncodeOutcome(o)
	if err != nil {
		return false, false, err
	}
	if int64(len(data)) > p.nc.MaxPayload()-1024 {
		return false, false, ErrOutcomeTooLarge
	}
	subject := answerSubject(o.JobID, reply)
	if subject == "" || !p.republishes.Load() || int64(len(data)) > p.nc.MaxPayload()-republishRoom {
		dup, err := p.publish(ctx, outcomePrefix+o.JobID, o.JobID, data, h)
		return dup, false, err
	}
	dup, err := p.publish(ctx, subject, o.JobID, data, h)
	return dup, err == nil && !dup, err
}

// OutcomeJobID is the job id in an outcomes-stream subject (plain or answer), or "".
func OutcomeJobID(subject string) string {
	rest, ok := strings.CutPrefix(subject, outcomePrefix)
	if !ok {
		return ""
	}
	id, _, _ := strings.Cut(rest, ".")
	return id
}

// Republished reports whether m is an outcome the outcomes stream republished.
func Republished(m *nats.Msg) bool {
	return m.Header != nil && m.Header.Get(hdrStream) == OutcomeStreamName
}

// parseAnswer reads a republished outcome as the final reply of its attempt, carrying the
// whole answer (nothing precedes it: Seq and Parts are 0).
func parseAnswer(m *nats.Msg) (Reply, error) {
	o, err := DecodeOutcome(m.Data)
	if err != nil || o.Job == nil {
		return Reply{}, errBadReply
	}
	f := &Final{JobID: o.JobID, Status: o.Status, StatusCode: o.StatusCode, Usage: o.Usage}
	if len(o.Error) > 0 {
		var e APIError
		if json.Unmarshal(o.Error, &e) != nil {
			return Reply{}, errBadReply
		}
		if e.Status == 0 {
			e.Status = o.StatusCode
		}
		f.Error = &e
	}
	rep := Reply{Kind: KindFinal, Attempt: o.Job.Attempt, Final: f}
	if len(o.Response) > 0 {
		rep.Data = o.Response
	}
	return rep, nil
}
