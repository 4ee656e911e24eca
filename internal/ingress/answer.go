package ingress

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/sluicehq/sluice/pkg/jobs"
	"github.com/sluicehq/sluice/pkg/store"
)

// answer writes one job's answer as an HTTP response: SSE events as they come, or the whole
// answer at the end. Which messages make up the answer, and what a lost or stray one means,
// is the Assembler's business (pkg/jobs); answer only writes what it is handed.
type answer struct {
	s   *Server
	w   http.ResponseWriter
	r   *http.Request
	job *jobs.Job
	asm *jobs.Assembler
	// wroteHeader is set once the SSE headers and a first event are written: from then on
	// only an error event can end the response if anything goes wrong.
	wroteHeader bool
	// broken is set when writing an event failed: the client stopped reading (its write
	// deadline passed, see guardWrites) or left.
	broken bool
	// resp follows a Responses stream, which ends in response.failed rather than an error.
	resp *responsesStream
	// cache, if set, collects the answer for the response cache.
	cache *cacheFill
}

func newAnswer(s *Server, w http.ResponseWriter, r *http.Request, job *jobs.Job) *answer {
	a := &answer{s: s, w: w, r: r, job: job, asm: jobs.NewAssembler(job.Stream)}
	if job.Stream && job.Endpoint == jobs.EndpointResponses {
		a.resp = &responsesStream{}
	}
	return a
}

// handle takes one reply message; it returns true when the response is complete.
func (a *answer) handle(rep jobs.Reply) bool {
	return a.step(a.asm.Add(rep))
}

// dropped handles a reply the mux had to drop; it returns true when the response is complete.
func (a *answer) dropped() bool {
	return a.step(a.asm.Dropped())
}

func (a *answer) step(st jobs.Step) bool {
	switch st.Kind {
	case jobs.StepEvent:
		a.event(st.Event, st.Data)
		if a.broken { // nobody reads the rest: abort the job as when the caller leaves
			a.s.clientGone(a.r, a.job)
			return true
		}
	case jobs.StepBroken:
		a.fail(st.Err)
		// The ingress ends the stream itself (the caller read too slowly, or the worker
		// changed mid-way): stop the upstream. It is a client-gone cancel, charged what the
		// upstream already produced, as when the caller leaves: the upstream did that work
		// for this caller, and a stalled reader must not get its output free.
		_ = jobs.CancelJob(a.s.nc, a.job.ID, jobs.CancelClientGone)
		return true
	case jobs.StepDone:
		a.releaseSlot()
		a.final(st.Final, st.Body, st.Gap)
		return true
	}
	return false
}

// releaseSlot frees the job's max_concurrency slot before its answer is complete, so the
// caller's next request finds it free: the job's row frees it too, but only once a settler
// has written the outcome, which may be later than the caller's next request.
func (a *answer) releaseSlot() {
	if !a.job.HoldsSlot {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(a.r.Context()), 2*time.Second)
	defer cancel()
	_ = a.s.store.ReleaseSlot(ctx, a.job.ID) // if Postgres is away, the row's end frees it
}

func (a *answer) event(name string, data []byte) {
	if !a.wroteHeader {
		h := a.w.Header()
		h.Set("Content-Type", "text/event-stream")
		h.Set("Cache-Control", "no-cache")
		h.Set("X-Accel-Buffering", "no")
		a.w.WriteHeader(http.StatusOK)
		a.wroteHeader = true
	}
	var buf bytes.Buffer
	if name != "" {
		buf.WriteString("event: ")
		buf.WriteString(name)
		buf.WriteByte('\n')
	}
	buf.WriteString("data: ")
	buf.Write(data)
	buf.WriteString("\n\n")
	if a.resp != nil {
		a.resp.observe(data)
	}
	if a.cache != nil {
		a.cache.event(a.s.cache, name, data)
	}
	if _, err := a.w.Write(buf.Bytes()); err != nil {
		a.broken = true
		return
	}
	if err := http.NewResponseController(a.w).Flush(); err != nil {
		a.broken = true
	}
}

// final ends the response with the job's outcome. body is a whole answer's bytes; gap says
// a part of it was lost on the way, so the stored result is read instead.
func (a *answer) final(f *jobs.Final, body []byte, gap bool) {
	if a.wroteHeader {
		if f.Status == store.StatusSucceeded {
			// Anthropic streams end with message_stop, Responses streams with response.completed.
			if a.job.Endpoint != jobs.EndpointMessages && a.resp == nil {
				_, _ = io.WriteString(a.w, "data: [DONE]\n\n")
			}
			_ = http.NewResponseController(a.w).Flush()
			a.storeCache(f, nil)
			return
		}
		a.streamError(f.Error)
		return
	}
	if f.Status != store.StatusSucceeded {
		if f.Error == nil {
			f.Error = jobs.UpstreamError("", "The job failed.")
		}
		a.fail(f.Error)
		return
	}
	if gap || (len(body) == 0 && !a.job.Stream) {
		var ok bool
		if body, ok = a.storedResponse(); !ok {
			return
		}
	}
	if a.job.Stream { // a stream that produced no events at all
		a.event("", []byte(`{"choices":[]}`))
		a.final(f, nil, false)
		return
	}
	a.w.Header().Set("Content-Type", "application/json")
	a.w.WriteHeader(f.StatusCode)
	_, _ = a.w.Write(body)
	a.storeCache(f, body)
}

// storedResponse reads the stored answer of a job whose reply lost a part in transit (the
// stored result is complete), or answers the caller with the failure and returns false. It
// is apart from final so that the row is not in the frame of every answer.
func (a *answer) storedResponse() ([]byte, bool) {
	row, err := a.s.job(a.r.Context(), a.job.KeyID, a.job.ID)
	if err != nil {
		a.fail(fmt.Errorf("read result of %s after a lost reply: %w", a.job.ID, err))
		return nil, false
	}
	return row.Response, true
}

// awaitStore waits, checking Postgres every second, for a job whose final reply may have
// been dropped, and answers from the stored row; it gives up at the job's deadline.
func (a *answer) awaitStore() bool {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			if a.fromStore() {
				return true
			}
			if time.Now().After(a.job.Deadline.Add(2 * time.Second)) {
				a.fail(jobs.Timeout())
				return true
			}
		case <-a.r.Context().Done():
			return true
		}
	}
}

// fromStore answers from Postgres if the job has already ended there (its reply was lost);
// it returns false if the job is still running.
func (a *answer) fromStore() bool {
	row, err := a.s.job(a.r.Context(), a.job.KeyID, a.job.ID)
	if err != nil || !row.Terminal() {
		return false
	}
	f := jobs.FinalFromJob(&row)
	if a.job.Stream && a.wroteHeader {
		// Some events may be missing and streams are not stored: end in an error, never
		// in a [DONE] that would vouch for a stream we cannot check.
		a.streamError(jobs.StreamLost("Part of the stream may have been lost in transit; the stream is incomplete."))
		return true
	}
	if a.job.Stream && f.Status == store.StatusSucceeded {
		// Streamed answers are not stored, so there is nothing to replay: say so plainly.
		a.fail(jobs.StreamLost("The job succeeded but its stream was lost in transit (NATS was unavailable); retry the request."))
		return true
	}
	var body []byte
	if f.Status == store.StatusSucceeded {
		body = row.Response // as read: a second read may not find it (a settler between them, NATS away)
	}
	a.final(f, body, len(body) == 0)
	return true
}

func (a *answer) fail(err error) {
	if a.wroteHeader {
		e, ok := errors.AsType[*jobs.APIError](err)
		if !ok {
			e = jobs.Internal()
		}
		a.streamError(e)
		return
	}
	a.s.writeError(a.w, a.r, err)
}

// streamError ends a started stream with an error event and no [DONE], so no client can
// mistake a cut stream for a complete one.
func (a *answer) streamError(e *jobs.APIError) {
	if e == nil {
		e = jobs.UpstreamError("", "The stream failed.")
	}
	if a.resp != nil {
		a.writeFailed(e)
		return
	}
	b, _ := json.Marshal(errorJSON(a.r, e))
	if a.job.Endpoint == jobs.EndpointMessages {
		_, _ = fmt.Fprintf(a.w, "event: error\ndata: %s\n\n", b)
	} else {
		_, _ = fmt.Fprintf(a.w, "data: %s\n\n", b)
	}
	_ = http.NewResponseController(a.w).Flush()
}
