package ingress

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"time"

	"github.com/sluicehq/sluice/pkg/store"
)

// defaultMaxReads is INGRESS_MAX_READS's default, for a Config not read from the
// environment.
const defaultMaxReads = 64

// readWait is how long a job read waits for a free read slot before it is refused.
const readWait = time.Second

// readSlots returns the semaphore of job reads: one token per read in progress, at most
// INGRESS_MAX_READS. A read holds its answer in memory (up to UPSTREAM_MAX_RESPONSE_BYTES)
// until its client has it, so this bounds what reads can hold at once.
func (s *Server) readSlots() chan struct{} {
	s.readsOnce.Do(func() { s.reads = make(chan struct{}, cmp.Or(s.cfg.MaxReads, defaultMaxReads)) })
	return s.reads
}

// errTooManyReads answers a read that found no free slot within readWait.
var errTooManyReads = errOverloaded("Too many job reads are in progress; retry shortly.")

// takeRead takes a read slot, waiting up to readWait for one, and returns the function that
// gives it back (once; later calls do nothing). It returns errTooManyReads, a 503 with
// Retry-After, if no slot came free, or if ctx ended first.
func (s *Server) takeRead(ctx context.Context) (release func(), err error) {
	slots := s.readSlots()
	select {
	case slots <- struct{}{}:
	default:
		t := time.NewTimer(readWait)
		defer t.Stop()
		select {
		case slots <- struct{}{}:
		case <-t.C:
			return nil, errTooManyReads
		case <-ctx.Done():
			return nil, errTooManyReads
		}
	}
	held := true
	return func() {
		if held {
			held = false
			<-slots
		}
	}, nil
}

// objectTail is how json.Marshal ends a job object without a response or an error: the
// last two fields of webhook.JobObject.
var objectTail = []byte(`"response":null,"error":null}`)

// writeJob answers 200 with a job object. A succeeded job's answer (up to
// UPSTREAM_MAX_RESPONSE_BYTES) is written straight from the row's bytes, as it was stored
// (Postgres checked it is JSON): encoding it with the rest of the object would validate
// and copy it into one more buffer, growing by doubling, that then lingers in
// encoding/json's pool. The object around it is encoded as usual; it is written whole by
// the encoder if its fields ever stop ending as objectTail expects.
func writeJob(w http.ResponseWriter, row *store.Job) {
	o := jobObject(row)
	if o.Response == nil || len(o.Response.Body) == 0 {
		writeJSON(w, http.StatusOK, o)
		return
	}
	resp, jobErr := o.Response, o.Error
	o.Response, o.Error = nil, nil
	head, err := json.Marshal(o)
	errJSON, err2 := json.Marshal(jobErr)
	if err != nil || err2 != nil || !bytes.HasSuffix(head, objectTail) {
		o.Response, o.Error = resp, jobErr
		writeJSON(w, http.StatusOK, o)
		return
	}
	head = append(head[:len(head)-len(objectTail)], `"response":{"status_code":`...)
	head = strconv.AppendInt(head, int64(resp.StatusCode), 10)
	head = append(head, `,"body":`...)
	tail := append(append([]byte(`},"error":`), errJSON...), "}\n"...)
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(head)+len(resp.Body)+len(tail)))
	w.WriteHeader(http.StatusOK)
	for _, b := range [][]byte{head, resp.Body, tail} {
		if _, err := w.Write(b); err != nil {
			return // the client left or stopped reading (guardWrites)
		}
	}
}
