package jobs

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/nats-io/nats.go"

	"github.com/sluicehq/sluice/pkg/ids"
	"github.com/sluicehq/sluice/pkg/providers"
)

// Reply messages carry their framing at the start of the payload, without NATS headers
// (which cost a header map on both ends for every message):
//
//	0x01 | kind | flags | uvarint seq | uvarint attempt | uvarint-prefixed event name | data
//
// A final message's data is its Final (encodeFinal) and then, for a non-stream answer that
// fits, the whole answer: one message per answer instead of a body message and a final.
// ParseReply also reads the header-based messages of earlier workers (legacy headers below).
const replyV1 = 0x01

// Legacy reply message headers: read from workers from before replyV1, and written to an
// ingress from before it (one that sends jobs as JSON), so that workers can be upgraded
// before ingresses.
const (
	hdrSeq     = "Sluice-Seq"     // 0, 1, 2 … within one attempt
	hdrKind    = "Sluice-Kind"    // event, body or final
	hdrAttempt = "Sluice-Attempt" // the JetStream delivery that produced the message
	hdrEvent   = "Sluice-Event"   // the SSE event name, for kind=event
	hdrMore    = "Sluice-More"    // "1": this event's data continues in the next message
)

// Kinds of reply message.
const (
	KindEvent = "event" // one server-sent event, forwarded as it arrived
	KindBody  = "body"  // one slice of a non-stream answer too large to go with the final
	KindFinal = "final" // the outcome; always last
)

// kinds maps the wire's kind byte to a kind, and back.
var kinds = [...]string{1: KindEvent, 2: KindBody, 3: KindFinal}

func kindByte(kind string) byte {
	for i, k := range kinds {
		if k == kind && i > 0 {
			return byte(i)
		}
	}
	panic("jobs: unknown reply kind " + kind)
}

const flagMore = 1 // this event's data continues in the next message

// replyOverhead bounds the framing of one message: the fixed bytes, two varints and an
// event name (SSE event names are short words; a longer one costs a part of its own room).
const replyOverhead = 3 + 2*binary.MaxVarintLen64

// Replier publishes the answer of one job attempt, in order, from one goroutine. Its
// messages are what an Assembler puts back together.
type Replier struct {
	nc      *nats.Conn
	subject string
	attempt uint64
	seq     int
	maxPart int
	legacy  bool // header-based messages, for an ingress from before replyV1
	header  nats.Header
}

// NewReplier returns the Replier of one attempt (JetStream delivery) of job. A job that came
// as JSON came from an ingress from before the binary forms, which reads only header-based
// replies. An async job has no reply subject: its Replier sends nothing.
func NewReplier(nc *nats.Conn, job *Job, attempt uint64) *Replier {
	// Leave room for the framing and a final under the server's max payload.
	maxPart := int(nc.MaxPayload()) - 4<<10
	if maxPart <= 0 {
		maxPart = 512 << 10
	}
	return &Replier{nc: nc, subject: job.Reply, attempt: attempt, maxPart: maxPart, legacy: job.jsonWire}
}

// frame starts a message's payload with room for n more bytes.
func (r *Replier) frame(kind string, event string, more bool, n int) []byte {
	b := make([]byte, 0, replyOverhead+binary.MaxVarintLen64+len(event)+n)
	var flags byte
	if more {
		flags |= flagMore
	}
	b = append(b, replyV1, kindByte(kind), flags)
	b = binary.AppendUvarint(b, uint64(r.seq))
	b = binary.AppendUvarint(b, r.attempt)
	b = binary.AppendUvarint(b, uint64(len(event)))
	return append(b, event...)
}

func (r *Replier) send(payload []byte) error {
	r.seq++
	return r.nc.Publish(r.subject, payload)
}

// SetFinalHeader has the final message carry h as its NATS headers (the trace context of
// the reply); the other messages go without, as their framing is in the payload. Nil: none.
func (r *Replier) SetFinalHeader(h nats.Header) { r.header = h }

func (r *Replier) publishPart(kind string, data []byte, event string, more bool) error {
	if r.subject == "" {
		return nil // async job: nobody waits on a subject
	}
	if r.legacy {
		m := &nats.Msg{Subject: r.subject, Data: data, Header: nats.Header{}}
		m.Header.Set(hdrKind, kind)
		m.Header.Set(hdrSeq, strconv.Itoa(r.seq))
		m.Header.Set(hdrAttempt, strconv.FormatUint(r.attempt, 10))
		if event != "" {
			m.Header.Set(hdrEvent, event)
		}
		if more {
			m.Header.Set(hdrMore, "1")
		}
		r.seq++
		return r.nc.PublishMsg(m)
	}
	return r.send(append(r.frame(kind, event, more, len(data)), data...))
}

// Event forwards one stream event; one larger than a NATS message goes as several parts,
// each but the last marked "more", which the Assembler joins before writing the event.
func (r *Replier) Event(ev providers.Event) error {
	data := ev.Data
	for len(data) > r.maxPart {
		if err := r.publishPart(KindEvent, data[:r.maxPart], ev.Name, true); err != nil {
			return err
		}
		data = data[r.maxPart:]
	}
	return r.publishPart(KindEvent, data, ev.Name, false)
}

// Finish sends the outcome and, before it or with it, a non-stream answer's body: with it
// when both fit in one message, else the body first in as many slices as it takes.
func (r *Replier) Finish(f *Final, body []byte) error {
	if r.subject == "" {
		return nil
	}
	if r.legacy || len(body)+len(appendFinal(nil, f))+binary.MaxVarintLen64 > r.maxPart {
		for len(body) > 0 {
			n := min(len(body), r.maxPart)
			if err := r.publishPart(KindBody, body[:n], "", false); err != nil {
				return err
			}
			body = body[n:]
		}
	}
	f.Parts = r.seq
	if r.legacy {
		b, err := json.Marshal(f)
		if err != nil {
			return err
		}
		return r.publishPart(KindFinal, b, "", false)
	}
	enc := appendFinal(nil, f)
	b := r.frame(KindFinal, "", false, binary.MaxVarintLen64+len(enc)+len(body))
	b = binary.AppendUvarint(b, uint64(len(enc)))
	b = append(b, enc...)
	if r.header != nil {
		r.seq++
		return r.nc.PublishMsg(&nats.Msg{Subject: r.subject, Data: append(b, body...), Header: r.header})
	}
	return r.send(append(b, body...))
}

// Sent is how many messages this attempt has published so far: 0 means the caller has seen
// nothing of it, so another worker may still run the whole job.
func (r *Replier) Sent() int { return r.seq }

// Reply is one message of a job's answer, as the ingress receives it.
type Reply struct {
	Kind    string
	Seq     int
	Attempt int
	Event   string
	// Data is an event's or a body slice's bytes, or the answer sent with a final (if any).
	Data []byte
	// More is true when an event's data continues in the next message.
	More bool
	// Final is the outcome, for KindFinal.
	Final *Final
}

var errBadReply = errors.New("malformed reply message")

// ParseReply reads a reply message, or a whole answer's outcome republished by the
// outcomes stream (republish.go). Data aliases the message's payload.
func ParseReply(m *nats.Msg) (Reply, error) {
	if Republished(m) {
		return parseAnswer(m)
	}
	if m.Header.Get(hdrKind) != "" {
		return parseLegacyReply(m)
	}
	b := m.Data
	if len(b) < 3 || b[0] != replyV1 || int(b[1]) >= len(kinds) || kinds[b[1]] == "" {
		return Reply{}, errBadReply
	}
	rep := Reply{Kind: kinds[b[1]], More: b[2]&flagMore != 0}
	b = b[3:]
	var nums [3]uint64 // seq, attempt, event length
	for i := range nums {
		v, n := binary.Uvarint(b)
		if n <= 0 || v > math.MaxInt32 {
			return Reply{}, errBadReply
		}
		nums[i], b = v, b[n:]
	}
	if nums[2] > uint64(len(b)) {
		return Reply{}, errBadReply
	}
	rep.Seq, rep.Attempt, rep.Event, b = int(nums[0]), int(nums[1]), string(b[:nums[2]]), b[nums[2]:]
	if rep.Kind == KindFinal {
		l, n := binary.Uvarint(b)
		if n <= 0 || l > uint64(len(b)-n) {
			return Reply{}, errBadReply
		}
		f, err := decodeFinal(b[n : n+int(l)])
		if err != nil {
			return Reply{}, errBadReply
		}
		rep.Final, b = f, b[n+int(l):]
	}
	if len(b) > 0 {
		rep.Data = b
	}
	return rep, nil
}

func parseLegacyReply(m *nats.Msg) (Reply, error) {
	seq, err1 := strconv.Atoi(m.Header.Get(hdrSeq))
	att, err2 := strconv.Atoi(m.Header.Get(hdrAttempt))
	kind := m.Header.Get(hdrKind)
	if err1 != nil || err2 != nil || (kind != KindEvent && kind != KindBody && kind != KindFinal) {
		return Reply{}, errBadReply
	}
	rep := Reply{Kind: kind, Seq: seq, Attempt: att, Event: m.Header.Get(hdrEvent), Data: m.Data,
		More: m.Header.Get(hdrMore) == "1"}
	if kind == KindFinal {
		var f Final
		if err := json.Unmarshal(m.Data, &f); err != nil {
			return Reply{}, errBadReply
		}
		rep.Final, rep.Data = &f, nil
	}
	return rep, nil
}

// Mux routes reply messages to the requests waiting for them, over ONE wildcard
// subscription per ingress process: a map of waiters, not a subscription per request.
type Mux struct {
	prefix  string
	sub     *nats.Subscription
	leader  *nats.Subscription // the outcomes stream's leader elections
	updated *nats.Subscription // and its updates
	mu      sync.Mutex
	waiters map[string]*Waiter
	dropped atomic.Int64
	recon   chan struct{} // closed at the next reconnect
}

// tokenBytes is the randomness of a reply prefix and of a waiter's token, from crypto/rand:
// 128 bits each, so that knowing any number of other subjects (or job ids) does not help
// to guess one. (nuid, NATS's own inbox ids, is a fast sequence: one process's ids share a
// prefix and count up.)
const tokenBytes = 16

// NewMux subscribes to this process's reply subjects. Call Close when done.
func NewMux(nc *nats.Conn) (*Mux, error) {
	m := &Mux{prefix: replyPrefix + ids.Random(tokenBytes) + ".", waiters: map[string]*Waiter{}, recon: make(chan struct{})}
	sub, err := nc.Subscribe(m.prefix+"*", m.dispatch)
	if err != nil {
		return nil, fmt.Errorf("subscribe to replies: %w", err)
	}
	// Bound what the client buffers for us; past it NATS drops and the waiter sees a gap.
	if err := sub.SetPendingLimits(100_000, 256<<20); err != nil {
		_ = sub.Unsubscribe()
		return nil, err
	}
	m.sub = sub
	// A whole answer is republished by the outcomes stream's leader once stored; if that
	// leader dies, an answer it stored but had not yet sent on is never sent (the new leader
	// does not republish what it applied as a follower). Its waiter must then look in the
	// store, as after a reconnect.
	m.leader, err = nc.Subscribe(outcomeLeaderElected, func(*nats.Msg) { m.NoteReconnect() })
	if err == nil { // and an update may have stopped the republication (republish.go)
		m.updated, err = nc.Subscribe(outcomeStreamUpdated, func(*nats.Msg) { m.NoteReconnect() })
		if err != nil {
			_ = m.leader.Unsubscribe()
		}
	}
	if err != nil {
		_ = sub.Unsubscribe()
		return nil, fmt.Errorf("subscribe to the outcomes stream's advisories: %w", err)
	}
	return m, nil
}

// outcomeLeaderElected is JetStream's advisory of a new leader of the outcomes stream.
const outcomeLeaderElected = "$JS.EVENT.ADVISORY.STREAM.LEADER_ELECTED." + OutcomeStreamName

// dispatch runs on the subscription's goroutine: it must never block.
func (m *Mux) dispatch(msg *nats.Msg) {
	m.mu.Lock()
	w := m.waiters[strings.TrimPrefix(msg.Subject, m.prefix)]
	m.mu.Unlock()
	if w == nil {
		return // the caller has gone
	}
	select {
	case w.c <- msg:
	default:
		// The caller reads too slowly: the message is lost, so say so at once rather than
		// let the caller wait for a final message that may be the one dropped.
		m.dropped.Add(1)
		w.lostOnce.Do(func() { close(w.lost) })
	}
}

// Waiter receives the replies of one job.
type Waiter struct {
	// Subject is the reply subject to put on the job.
	Subject  string
	c        chan *nats.Msg
	lost     chan struct{}
	lostOnce sync.Once
	tok      string
	m        *Mux
}

// C delivers the reply messages in order.
func (w *Waiter) C() <-chan *nats.Msg { return w.c }

// Lost is closed when a reply message had to be dropped because C was full.
func (w *Waiter) Lost() <-chan struct{} { return w.lost }

// Done forgets the waiter; call it when the answer is complete or abandoned.
func (w *Waiter) Done() {
	w.m.mu.Lock()
	delete(w.m.waiters, w.tok)
	w.m.mu.Unlock()
}

// Wait registers a waiter with a fresh reply subject whose channel holds buf messages.
func (m *Mux) Wait(buf int) *Waiter {
	tok := ids.Random(tokenBytes) // Crockford base32: never '.', '*' or '>'
	w := &Waiter{Subject: m.prefix + tok, c: make(chan *nats.Msg, buf), lost: make(chan struct{}), tok: tok, m: m}
	m.mu.Lock()
	m.waiters[tok] = w
	m.mu.Unlock()
	return w
}

// Register is Wait for callers that only need the subject, the channel and Done.
func (m *Mux) Register(buf int) (subject string, ch <-chan *nats.Msg, done func()) {
	w := m.Wait(buf)
	return w.Subject, w.c, w.Done
}

// Reconnected returns a channel that is closed at the next NATS reconnect, or the next
// leader election or update of the outcomes stream: replies sent while the connection was
// down, answers the old leader had stored but not sent on, or answers stored while an
// update stopped their republication are lost, so waiters should then look in the store.
func (m *Mux) Reconnected() <-chan struct{} {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.recon
}

// NoteReconnect wakes everyone waiting on Reconnected; call it from the connection's
// reconnect handler.
func (m *Mux) NoteReconnect() {
	m.mu.Lock()
	defer m.mu.Unlock()
	close(m.recon)
	m.recon = make(chan struct{})
}

// Waiting returns the number of registered waiters.
func (m *Mux) Waiting() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.waiters)
}

// Dropped returns how many reply messages were dropped because a waiter's buffer was full.
func (m *Mux) Dropped() int64 { return m.dropped.Load() }

// Close unsubscribes.
func (m *Mux) Close() error {
	_ = m.leader.Unsubscribe()
	_ = m.updated.Unsubscribe()
	return m.sub.Unsubscribe()
}
