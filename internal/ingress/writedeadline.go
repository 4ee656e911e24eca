package ingress

import (
	"cmp"
	"errors"
	"net/http"
	"time"
)

// defaultWriteStall is INGRESS_WRITE_STALL_TIMEOUT's default, for a Config not read from
// the environment.
const defaultWriteStall = 30 * time.Second

// writeChunk is how many bytes of a response one write deadline covers: a large answer is
// written in pieces this size, each given the stall limit afresh, so that a slow reader
// who keeps reading is served in full while one who stops reading is cut within the limit.
const writeChunk = 64 << 10

// guardWrites gives every write of h's responses a deadline of the stall limit
// (INGRESS_WRITE_STALL_TIMEOUT): a client that stops reading makes the write fail instead
// of blocking its handler — and whatever the handler holds (a waiting slot, an answer in
// memory, the connection) — for ever. A failed write cancels the request's context, as a
// client that hangs up does, so the handler ends the same way.
//
// On HTTP/1 the deadline is the connection's and counts only while a write is in progress,
// so it is set at the start (which also bounds a 100 Continue) and refreshed before each
// write. On HTTP/2 it is the stream's, a timer that runs whether or not anything is being
// written, so it is set for each write and cleared after it, and a handler may wait
// (for a job, between stream events) as long as it needs. Either way it is set once more
// when the handler returns, for what net/http writes after it: the buffered rest of the
// response and the end of a chunked body.
func (s *Server) guardWrites(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sw := &stallWriter{ResponseWriter: w, rc: http.NewResponseController(w),
			stall: cmp.Or(s.cfg.WriteStallTimeout, defaultWriteStall), h2: r.ProtoMajor >= 2}
		if !sw.h2 {
			sw.arm()
		}
		defer sw.arm()
		h.ServeHTTP(sw, r)
	})
}

// stallWriter is a ResponseWriter whose writes and flushes each run under a write deadline.
type stallWriter struct {
	http.ResponseWriter
	rc          *http.ResponseController
	stall       time.Duration
	h2          bool
	unsupported bool // the writer underneath has no deadlines (a test's ResponseRecorder)
}

// arm sets the deadline for the write about to be made.
func (w *stallWriter) arm() {
	if w.unsupported {
		return
	}
	if err := w.rc.SetWriteDeadline(time.Now().Add(w.stall)); errors.Is(err, http.ErrNotSupported) {
		w.unsupported = true
	}
}

// disarm clears an HTTP/2 stream's deadline once a write is done (see guardWrites). An
// HTTP/1 connection's deadline is left as it is: it matters only during a write, and the
// next one sets it again.
func (w *stallWriter) disarm() {
	if w.h2 && !w.unsupported {
		_ = w.rc.SetWriteDeadline(time.Time{})
	}
}

// Write writes p in pieces of at most writeChunk bytes, each under a fresh deadline. It
// stops at the first error (a deadline passed: the client stopped reading).
func (w *stallWriter) Write(p []byte) (int, error) {
	defer w.disarm()
	n := 0
	for len(p) > 0 {
		w.arm()
		m, err := w.ResponseWriter.Write(p[:min(len(p), writeChunk)])
		n += m
		if err != nil {
			return n, err
		}
		p = p[m:]
	}
	return n, nil
}

// FlushError flushes under a deadline; http.ResponseController.Flush finds it.
func (w *stallWriter) FlushError() error {
	w.arm()
	defer w.disarm()
	return w.rc.Flush()
}

// Unwrap lets http.ResponseController reach the writer underneath.
func (w *stallWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
