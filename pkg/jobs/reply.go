package jobs

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nuid"

	"github.com/sluicehq/sluice/pkg/providers"
)

// Reply message headers.
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
	KindBody  = "body"  // one slice of a non-stream answer too large for one NATS message
	KindFinal = "final" // the outcome; always last
)

// replier publishes the answer of one job attempt, in order, from one goroutine.
type replier struct {
	nc      *nats.Conn
	subject string
	attempt string
	seq     int
	maxPart int
}

func newReplier(nc *nats.Conn, subject string, attempt uint64) *replier {
	// Leave room for headers under the server's max payload.
	maxPart := int(nc.MaxPayload()) - 4<<10
	if maxPart <= 0 {
		maxPart = 512 << 10
	}
	return &replier{nc: nc, subject: subject, attempt: strconv.FormatUint(attempt, 10), maxPart: maxPart}
}

func (r *replier) publish(kind string, data []byte, event string) error {
	return r.publishPart(kind, data, event, false)
}

func (r *replier) publishPart(kind string, data []byte, event string, more bool) error {
	if r.subject == "" {
		return nil // async job: nobody waits on a subject
	}
	m := &nats.Msg{Subject: r.subject, Data: data, Header: nats.Header{}}
	m.Header.Set(hdrKind, kind)
	m.Header.Set(hdrSeq, strconv.Itoa(r.seq))
	m.Header.Set(hdrAttempt, r.attempt)
	if event != "" {
		m.Header.Set(hdrEvent, event)
	}
	if more {
		m.Header.Set(hdrMore, "1")
	}
	r.seq++
	return r.nc.PublishMsg(m)
}

// event forwards one stream event; one larger than a NATS message goes as several parts,
// each but the last marked "more", which the ingress joins before writing the event.
func (r *replier) event(ev providers.Event) error {
	data := ev.Data
	for len(data) > r.maxPart {
		if err := r.publishPart(KindEvent, data[:r.maxPart], ev.Name, true); err != nil {
			return err
		}
		data = data[r.maxPart:]
	}
	return r.publish(KindEvent, data, ev.Name)
}

// body sends a whole answer as as many slices as it takes.
func (r *replier) body(b []byte) error {
	for len(b) > 0 {
		n := min(len(b), r.maxPart)
		if err := r.publish(KindBody, b[:n], ""); err != nil {
			return err
		}
		b = b[n:]
	}
	return nil
}

// final sends the outcome.
func (r *replier) final(f *Final) error {
	f.Parts = r.seq
	b, err := json.Marshal(f)
	if err != nil {
		return err
	}
	return r.publish(KindFinal, b, "")
}

// Reply is one message of a job's answer, as the ingress receives it.
type Reply struct {
	Kind    string
	Seq     int
	Attempt int
	Event   string
	Data    []byte
	// More is true when an event's data continues in the next message.
	More bool
}

// ParseReply reads a reply message's headers.
func ParseReply(m *nats.Msg) (Reply, error) {
	seq, err1 := strconv.Atoi(m.Header.Get(hdrSeq))
	att, err2 := strconv.Atoi(m.Header.Get(hdrAttempt))
	kind := m.Header.Get(hdrKind)
	if err1 != nil || err2 != nil || (kind != KindEvent && kind != KindBody && kind != KindFinal) {
		return Reply{}, fmt.Errorf("malformed reply message")
	}
	return Reply{Kind: kind, Seq: seq, Attempt: att, Event: m.Header.Get(hdrEvent), Data: m.Data,
		More: m.Header.Get(hdrMore) == "1"}, nil
}

// Mux routes reply messages to the requests waiting for them, over ONE wildcard
// subscription per ingress process: a map of waiters, not a subscription per request.
type Mux struct {
	prefix  string
	sub     *nats.Subscription
	mu      sync.Mutex
	waiters map[string]*Waiter
	dropped atomic.Int64
	recon   chan struct{} // closed at the next reconnect
}

// NewMux subscribes to this process's reply subjects. Call Close when done.
func NewMux(nc *nats.Conn) (*Mux, error) {
	m := &Mux{prefix: replyPrefix + nuid.Next() + ".", waiters: map[string]*Waiter{}, recon: make(chan struct{})}
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
	return m, nil
}

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
	tok := nuid.Next()
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

// Reconnected returns a channel that is closed at the next NATS reconnect: replies sent
// while the connection was down are lost, so waiters should then look in Postgres.
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
func (m *Mux) Close() error { return m.sub.Unsubscribe() }
