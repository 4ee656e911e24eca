package providertest

import (
	"context"
	"net"
	"net/http"
	"strconv"
	"time"
)

// deliver writes rep as mode says (in full, cut short, or dripped) and adds
// its usage to the stats if every byte was written.
func (u *Upstream) deliver(w http.ResponseWriter, r *http.Request, rep reply, mode Mode) {
	rc := http.NewResponseController(w)
	if rep.stream {
		w.Header().Set("Content-Type", "text/event-stream")
		w.Header().Set("Cache-Control", "no-cache")
	} else {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Length", strconv.Itoa(rep.size))
	}
	// The answer is cut before frame cutAt (midstream, between stream events)
	// or halfway through it (truncate, and any cut of a JSON body).
	cutAt, half := rep.n, false
	if mode == ModeTruncate || mode == ModeMidstream {
		cutAt, half = rep.n/2, mode == ModeTruncate || !rep.stream
	}
	out := writer{w: w, rc: rc, done: r.Context().Done(), closed: u.closed}
	if mode == ModeDrip {
		t := time.NewTicker(u.cfg.DripInterval)
		defer t.Stop()
		out.tick = t.C
	}
	w.WriteHeader(http.StatusOK)
	// From the last frame's write on, the client may hold the whole answer before it is
	// tallied below: Stats waits for such answers (finishing).
	finishing := false
	defer func() {
		if finishing {
			u.tallyMu.Lock()
			u.finishing--
			u.tallyMu.Unlock()
		}
	}()
	for i := range rep.n {
		if i == rep.n-1 && i != cutAt {
			u.tallyMu.Lock()
			u.finishing++
			u.tallyMu.Unlock()
			finishing = true
		}
		f := rep.frame(i)
		if i == cutAt {
			if half {
				_ = out.write(f[:len(f)/2])
			}
			_ = rc.Flush()
			cut(w, false)
			return
		}
		if err := out.write(f); err != nil {
			u.abandon(w, err)
			return
		}
		if rep.stream && rc.Flush() != nil {
			return
		}
	}
	if rc.Flush() != nil {
		return
	}
	u.tallyMu.Lock()
	defer u.tallyMu.Unlock()
	if finishing {
		u.finishing--
		finishing = false
	}
	u.tally.succeeded++
	u.tally.promptTokens += int64(rep.promptTokens)
	u.tally.completionTokens += int64(rep.completionTokens)
}

// writer writes an answer, one byte per tick if tick is set.
type writer struct {
	w       http.ResponseWriter
	rc      *http.ResponseController
	tick    <-chan time.Time
	done    <-chan struct{} // the request's context
	closed  <-chan struct{} // the Upstream's
	written int
}

// write writes p. It returns the write error, context.Canceled if the client
// went away during a drip, or errClosed if the Upstream was closed during one.
func (o *writer) write(p []byte) error {
	if o.tick == nil {
		_, err := o.w.Write(p)
		return err
	}
	for i := range p {
		if o.written > 0 { // the first byte goes out at once
			select {
			case <-o.tick:
			case <-o.done:
				return context.Canceled
			case <-o.closed:
				return errClosed
			}
		}
		if _, err := o.w.Write(p[i : i+1]); err != nil {
			return err
		}
		if err := o.rc.Flush(); err != nil {
			return err
		}
		o.written++
	}
	return nil
}

// cut drops the connection without finishing the response; whatever was
// flushed before stays delivered. With rst the close is abortive, so the
// client sees a connection reset rather than EOF.
func cut(w http.ResponseWriter, rst bool) {
	conn, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		// HTTP/2 cannot hijack. Aborting the handler resets the stream (or
		// closes an HTTP/1 connection) and net/http does not log it.
		panic(http.ErrAbortHandler)
	}
	if tc, ok := conn.(*net.TCPConn); ok && rst {
		_ = tc.SetLinger(0)
	}
	_ = conn.Close()
}

// writeJSON writes v as a JSON body with status code.
func writeJSON(w http.ResponseWriter, code int, v any) {
	b := mustJSON(v)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(code)
	_, _ = w.Write(b)
}
