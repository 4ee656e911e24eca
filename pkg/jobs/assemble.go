package jobs

import "bytes"

// Assembler puts one job's reply messages (Replier's) back together for the caller, and owns
// the rules that make a lost or stray message safe:
//
//   - Messages are numbered per attempt (JetStream delivery). A message of an earlier attempt
//     is stale and ignored; one of a later attempt means the job was redelivered: a whole
//     answer starts over, but a stream the caller has already seen part of cannot, and ends
//     broken (stream_interrupted).
//   - Within an attempt, a number seen before is a duplicate and ignored; a number skipped
//     means a message was lost. A lost slice of a whole answer is repaired from the stored
//     result (Step.Gap); a stream is not stored, so a hole in it ends it broken (stream_gap),
//     never complete.
//   - An event larger than one message comes in parts, joined before it is handed on; a
//     whole answer larger than one message comes in body slices before its final.
//
// An Assembler is used by one goroutine.
type Assembler struct {
	stream  bool
	attempt int
	next    int  // expected sequence number
	started bool // an event was handed on
	gap     bool // a body slice of this attempt was lost: the body must come from the stored result
	dropped bool // a message of unknown attempt was dropped: likewise, whatever attempt follows
	body    bytes.Buffer
	partial bytes.Buffer // the parts so far of an event split across messages
}

// NewAssembler returns an Assembler for a job; stream says whether the caller asked for SSE.
func NewAssembler(stream bool) *Assembler { return &Assembler{stream: stream} }

// StepKind says what a reply message amounted to.
type StepKind int

const (
	// StepNone: nothing to hand on yet (a body slice, a part of an event, a stale message).
	StepNone StepKind = iota
	// StepEvent: one whole server-sent event to write now (Event, Data).
	StepEvent
	// StepDone: the answer is complete (Final; Body for a whole answer, unless Gap).
	StepDone
	// StepBroken: the stream cannot be completed (Err); the caller will not get this run's
	// output, so the job should be cancelled (it is charged what the upstream produced).
	StepBroken
)

// Step is what one reply message means for the caller.
type Step struct {
	Kind  StepKind
	Event string // StepEvent: the SSE event name ("" for OpenAI streams)
	Data  []byte // StepEvent: the event's data (valid until the next Add)
	Final *Final // StepDone
	// Body is a whole answer's bytes at StepDone (valid until the next Add); nil for a
	// stream. When Gap is set a part of it was lost and the stored result must be used.
	Body []byte
	Gap  bool
	Err  *APIError // StepBroken
}

// Started reports whether an event has been handed on: from then on the caller has part
// of a stream, and only an error event can end it if anything goes wrong.
func (a *Assembler) Started() bool { return a.started }

// Add takes the next reply message.
func (a *Assembler) Add(rep Reply) Step {
	if rep.Attempt != a.attempt {
		if rep.Attempt < a.attempt {
			return Step{} // a late message from an earlier delivery
		}
		if a.started {
			return Step{Kind: StepBroken, Err: UpstreamError("stream_interrupted",
				"The worker running this stream stopped; the stream is incomplete.")}
		}
		a.attempt, a.next, a.gap = rep.Attempt, 0, false // a redelivery starts over
		a.body.Reset()
		a.partial.Reset()
	}
	switch {
	case rep.Seq < a.next:
		return Step{} // a duplicate: the replier numbers each message of an attempt once
	case rep.Seq > a.next:
		if a.started || a.stream {
			return Step{Kind: StepBroken, Err: StreamGap("Part of the stream was lost in transit; the stream is incomplete.")}
		}
		a.gap = true
	}
	a.next = rep.Seq + 1
	switch rep.Kind {
	case KindEvent:
		if rep.More || a.partial.Len() > 0 { // an event larger than one message, in parts
			a.partial.Write(rep.Data)
			if rep.More {
				return Step{}
			}
			data := bytes.Clone(a.partial.Bytes())
			a.partial.Reset()
			return a.event(rep.Event, data)
		}
		return a.event(rep.Event, rep.Data)
	case KindBody:
		a.body.Write(rep.Data)
	case KindFinal:
		if rep.Final.Parts != rep.Seq { // a slice before the final went missing
			a.gap = true
		}
		a.body.Write(rep.Data) // a whole answer may come with its final
		s := Step{Kind: StepDone, Final: rep.Final, Gap: a.gap || a.dropped}
		if !a.stream {
			s.Body = a.body.Bytes()
		}
		return s
	}
	return Step{}
}

func (a *Assembler) event(name string, data []byte) Step {
	a.started = true
	return Step{Kind: StepEvent, Event: name, Data: data}
}

// Dropped notes that a reply message was dropped before it reached the Assembler (the
// caller read too slowly). A stream cannot be repaired and ends broken; a whole answer is
// marked to be read from the stored result (StepNone).
func (a *Assembler) Dropped() Step {
	if a.stream {
		return Step{Kind: StepBroken, Err: StreamGap(
			"The client read the stream too slowly and part of it was lost; the stream is incomplete.")}
	}
	a.dropped = true
	return Step{}
}
