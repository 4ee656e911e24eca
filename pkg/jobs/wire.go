package jobs

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/sluicehq/sluice/pkg/store"
	"github.com/sluicehq/sluice/pkg/tokens"
)

// Endpoints a job may run.
const (
	EndpointChat        = "/v1/chat/completions"
	EndpointCompletions = "/v1/completions"
	EndpointEmbeddings  = "/v1/embeddings"
	EndpointMessages    = "/v1/messages"
	EndpointResponses   = "/v1/responses"
)

// Job is the message a worker runs.
type Job struct {
	ID       string          `json:"id"`
	KeyID    string          `json:"key_id"`
	Endpoint string          `json:"endpoint"`
	Model    string          `json:"model"`
	Body     json.RawMessage `json:"body"`
	// Stream is true when the caller wants server-sent events.
	Stream bool `json:"stream,omitempty"`
	// WantUsageChunk is true when a streaming caller asked for the final usage chunk.
	WantUsageChunk bool `json:"want_usage_chunk,omitempty"`
	// Async jobs have a row in Postgres before they are published.
	Async bool `json:"async,omitempty"`
	// HoldsSlot is true when the job took one of its key's max_concurrency slots.
	HoldsSlot bool `json:"holds_slot,omitempty"`
	// ReservedTokens is true when admission counted tokens.Admission(len(Body)) tokens
	// against a tokens-per-minute limit, which settlement corrects to the reported usage.
	ReservedTokens bool      `json:"reserved_tokens,omitempty"`
	CreatedAt      time.Time `json:"created_at"`
	Deadline       time.Time `json:"deadline"`
	// Reply is the subject the answer goes to; empty for async jobs.
	Reply string `json:"reply,omitempty"`
	// ReplyByOutcome is true when the ingress takes a whole (non-stream) answer from the
	// outcomes stream's republication of the stored outcome (republish.go; ParseReply reads
	// both forms): the worker then sends no final reply of its own. It travels as the
	// HeaderAnswer header, which workers from before it ignore (they reply as always).
	ReplyByOutcome bool `json:"-"`
	// Batch, Line and CustomID name the batch line this job is (empty for other jobs): it
	// runs from the batch stream, its row is written once with its outcome, and its
	// deadline is the batch's expiry (each run still gets at most JobTimeout).
	Batch    string `json:"batch,omitempty"`
	Line     int    `json:"line,omitempty"`
	CustomID string `json:"custom_id,omitempty"`
	// Header is what travels with the job as NATS headers of its message, outside its wire
	// form (workers of every version ignore headers they do not know): the request id
	// (HeaderRequestID) and the W3C trace context (traceparent, tracestate). A worker sets it
	// to its message's headers. Nil: none.
	Header nats.Header `json:"-"`

	// jsonWire is true for a job decoded from the JSON form: it came from an ingress from
	// before the binary forms, which gets its replies in the header-based form.
	jsonWire bool
}

// HeaderRequestID is the job message's header holding the X-Request-Id of the request that
// made the job.
const HeaderRequestID = "Sluice-Request-Id"

// HeaderAnswer on a job message, with the value answerByOutcome, asks for the whole answer
// as the republished outcome (Job.ReplyByOutcome).
const (
	HeaderAnswer    = "Sluice-Answer"
	answerByOutcome = "outcome"
)

// SetHeader sets the job's headers to h, its message's, and what they carry beside the wire
// form: whether the answer goes by outcome.
func (j *Job) SetHeader(h nats.Header) {
	j.Header = h
	j.ReplyByOutcome = h.Get(HeaderAnswer) == answerByOutcome
}

// RequestID is the X-Request-Id of the request that made the job, or "" if none came with it.
func (j *Job) RequestID() string { return j.Header.Get(HeaderRequestID) }

// The wire form of a job is binary: a version byte, flags, the two times, the short
// fields, then the request body as it came, uncopied. JSON (the form before it, which
// Decode still reads, so jobs queued by an older ingress still run) cost the worker a
// reflective decode of the whole body on every delivery.
//
//	0x01 | flags | varint created_at (unix ns) | varint deadline (unix ns)
//	     | uvarint-prefixed id, key_id, endpoint, model, reply
//	     [| uvarint-prefixed batch, custom_id | uvarint line, if flagBatch] | body
const wireV1 = 0x01

// Flag bits of the wire form.
const (
	flagStream = 1 << iota
	flagWantUsageChunk
	flagAsync
	flagHoldsSlot
	flagReservedTokens
	flagBatch
)

// Encode returns the job's wire form. The body is not copied into anything but the result.
func (j *Job) Encode() ([]byte, error) {
	var flags byte
	for bit, on := range [...]bool{j.Stream, j.WantUsageChunk, j.Async, j.HoldsSlot, j.ReservedTokens, j.Batch != ""} {
		if on {
			flags |= 1 << bit
		}
	}
	n := 2 + 2*binary.MaxVarintLen64 + len(j.ID) + len(j.KeyID) + len(j.Endpoint) + len(j.Model) + len(j.Reply) +
		8*binary.MaxVarintLen64 + len(j.Batch) + len(j.CustomID) + len(j.Body)
	b := make([]byte, 0, n)
	b = append(b, wireV1, flags)
	b = binary.AppendVarint(b, unixNano(j.CreatedAt))
	b = binary.AppendVarint(b, unixNano(j.Deadline))
	for _, s := range [...]string{j.ID, j.KeyID, j.Endpoint, j.Model, j.Reply} {
		b = binary.AppendUvarint(b, uint64(len(s)))
		b = append(b, s...)
	}
	if j.Batch != "" {
		b = appendString(appendString(b, j.Batch), j.CustomID)
		b = binary.AppendUvarint(b, uint64(max(j.Line, 0)))
	}
	return append(b, j.Body...), nil
}

// ErrBadJob means a message is not a job this version can run.
var ErrBadJob = errors.New("malformed job")

// Decode parses a job message, binary or (from an older ingress) JSON. It returns an error
// wrapping ErrBadJob if the message is malformed, lacks an id, key, endpoint or deadline, or
// carries a body that is not JSON. The job's body aliases data.
func Decode(data []byte) (*Job, error) {
	var j *Job
	var err error
	if len(data) > 0 && data[0] == wireV1 {
		j, err = decodeV1(data)
	} else {
		j, err = decodeJSON(data)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadJob, err)
	}
	if j.ID == "" || j.KeyID == "" || j.Endpoint == "" || j.Deadline.IsZero() {
		return nil, fmt.Errorf("%w: missing id, key, endpoint or deadline", ErrBadJob)
	}
	if !wireTime(j.CreatedAt) || !wireTime(j.Deadline) {
		return nil, fmt.Errorf("%w: a time outside the years 1678–2262", ErrBadJob)
	}
	return j, nil
}

// unixNano is t in Unix nanoseconds, 0 for the zero time.
func unixNano(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

// wireTime reports whether t survives the wire form: zero, or within int64 nanoseconds.
func wireTime(t time.Time) bool {
	return t.IsZero() || time.Unix(0, t.UnixNano()).Equal(t)
}

func decodeV1(data []byte) (*Job, error) {
	r := wireReader{b: data[1:]}
	flags := r.byte()
	created, deadline := r.varint(), r.varint()
	j := &Job{ID: r.string(), KeyID: r.string(), Endpoint: r.string(), Model: r.string(), Reply: r.string(),
		Stream: flags&flagStream != 0, WantUsageChunk: flags&flagWantUsageChunk != 0, Async: flags&flagAsync != 0,
		HoldsSlot: flags&flagHoldsSlot != 0, ReservedTokens: flags&flagReservedTokens != 0}
	if flags&flagBatch != 0 {
		j.Batch, j.CustomID, j.Line = r.string(), r.string(), r.int()
	}
	switch {
	case r.bad:
		return nil, errors.New("truncated")
	case flags>>6 != 0:
		return nil, fmt.Errorf("unknown flags %#x", flags)
	case len(r.b) > 0 && !json.Valid(r.b):
		return nil, errors.New("body is not JSON")
	}
	if len(r.b) > 0 {
		j.Body = r.b
	}
	if created != 0 {
		j.CreatedAt = time.Unix(0, created).UTC()
	}
	if deadline != 0 {
		j.Deadline = time.Unix(0, deadline).UTC()
	}
	return j, nil
}

func decodeJSON(data []byte) (*Job, error) {
	var j Job
	if err := json.Unmarshal(data, &j); err != nil {
		return nil, err
	}
	if string(j.Body) == "null" {
		j.Body = nil
	}
	j.jsonWire = true
	return &j, nil
}

// Final is the last reply message of a job attempt.
type Final struct {
	JobID  string `json:"job_id"`
	Status string `json:"status"` // succeeded, failed or canceled
	// StatusCode is the HTTP status for the caller: the upstream's on success.
	StatusCode int           `json:"status_code"`
	Error      *APIError     `json:"error,omitempty"`
	Usage      *tokens.Usage `json:"usage,omitempty"`
	CostUSD    float64       `json:"cost_usd"`
	// Parts is how many sequenced parts preceded this message in this attempt.
	Parts int `json:"parts"`
}

// appendFinal appends f's wire form to b:
//
//	flags (usage, error) | uvarint status code | uvarint parts | float64 cost | job id | status
//	[| varint prompt, completion, total tokens] [| error: uvarint status, retry after; message, type, param, code]
//
// with each string uvarint-prefixed.
func appendFinal(b []byte, f *Final) []byte {
	var flags byte
	if f.Usage != nil {
		flags |= 1
	}
	if f.Error != nil {
		flags |= 2
	}
	b = append(b, flags)
	b = binary.AppendUvarint(b, uint64(max(f.StatusCode, 0)))
	b = binary.AppendUvarint(b, uint64(max(f.Parts, 0)))
	b = binary.LittleEndian.AppendUint64(b, math.Float64bits(f.CostUSD))
	b = appendString(b, f.JobID)
	b = appendString(b, f.Status)
	if u := f.Usage; u != nil {
		b = binary.AppendVarint(b, u.PromptTokens)
		b = binary.AppendVarint(b, u.CompletionTokens)
		b = binary.AppendVarint(b, u.Total()) // kept for readers that expect it
	}
	if e := f.Error; e != nil {
		b = binary.AppendUvarint(b, uint64(max(e.Status, 0)))
		b = binary.AppendUvarint(b, uint64(max(e.RetryAfter, 0)))
		for _, s := range [...]string{e.Message, e.Type, e.Param, e.Code} {
			b = appendString(b, s)
		}
	}
	return b
}

func appendString(b []byte, s string) []byte {
	return append(binary.AppendUvarint(b, uint64(len(s))), s...)
}

// wireReader reads the fields of a binary form; the first failure sticks.
type wireReader struct {
	b   []byte
	bad bool
}

func (r *wireReader) uvarint() uint64 {
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.bad = true
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *wireReader) int() int {
	v := r.uvarint()
	if v > math.MaxInt32 {
		r.bad = true
		return 0
	}
	return int(v)
}

func (r *wireReader) varint() int64 {
	v, n := binary.Varint(r.b)
	if n <= 0 {
		r.bad = true
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *wireReader) string() string {
	l := r.uvarint()
	if r.bad || l > uint64(len(r.b)) {
		r.bad = true
		return ""
	}
	s := string(r.b[:l])
	r.b = r.b[l:]
	return s
}

// bytes reads a length-prefixed byte field (nil when empty), sharing r's memory.
func (r *wireReader) bytes() []byte {
	l := r.uvarint()
	if r.bad || l > uint64(len(r.b)) {
		r.bad = true
		return nil
	}
	if l == 0 {
		return nil
	}
	v := r.b[:l:l]
	r.b = r.b[l:]
	return v
}

func (r *wireReader) byte() byte {
	if len(r.b) == 0 {
		r.bad = true
		return 0
	}
	c := r.b[0]
	r.b = r.b[1:]
	return c
}

func (r *wireReader) float64() float64 {
	if len(r.b) < 8 {
		r.bad = true
		return 0
	}
	v := math.Float64frombits(binary.LittleEndian.Uint64(r.b))
	r.b = r.b[8:]
	return v
}

// decodeFinal reads what appendFinal wrote; it fails on anything else, trailing bytes included.
func decodeFinal(b []byte) (*Final, error) {
	r := wireReader{b: b}
	flags := r.byte()
	f := &Final{StatusCode: r.int(), Parts: r.int(), CostUSD: r.float64(), JobID: r.string(), Status: r.string()}
	if flags&1 != 0 {
		prompt, completion := r.varint(), r.varint()
		_ = r.varint() // the total, derived
		f.Usage = &tokens.Usage{PromptTokens: prompt, CompletionTokens: completion}
	}
	if flags&2 != 0 {
		f.Error = &APIError{Status: r.int(), RetryAfter: r.int(), Message: r.string(), Type: r.string(),
			Param: r.string(), Code: r.string()}
	}
	if r.bad || len(r.b) > 0 || flags&^3 != 0 {
		return nil, errors.New("malformed final")
	}
	return f, nil
}

// Row is the job's row as of delivery attempt (0 before any): the one place a job becomes a
// store.NewJob. It keeps the request body only for an async job, which is part of the job its
// owner created; a sync call's prompt is not needed to answer or replay it, so it is not kept.
func (j *Job) Row(attempt int) store.NewJob {
	row := store.NewJob{ID: j.ID, KeyID: j.KeyID, Endpoint: j.Endpoint, Model: j.Model, Async: j.Async,
		CreatedAt: j.CreatedAt, Deadline: j.Deadline, Attempt: attempt, HoldsSlot: j.HoldsSlot,
		BatchID: j.Batch, BatchLine: j.Line, CustomID: j.CustomID}
	if j.ReservedTokens {
		row.ReservedTokens = tokens.Admission(len(j.Body))
	}
	if j.Async {
		row.Request = j.Body
	}
	return row
}

// FinalFromJob builds the final reply message of a finished job row.
func FinalFromJob(row *store.Job) *Final {
	f := &Final{JobID: row.ID, Status: row.Status, StatusCode: http.StatusOK}
	if row.StatusCode != nil {
		f.StatusCode = *row.StatusCode
	}
	if len(row.Error) > 0 {
		var e APIError
		if json.Unmarshal(row.Error, &e) == nil {
			e.Status = f.StatusCode
			f.Error = &e
		}
	}
	if row.PromptTokens != nil && row.CompletionTokens != nil {
		f.Usage = &tokens.Usage{PromptTokens: *row.PromptTokens, CompletionTokens: *row.CompletionTokens}
	}
	if row.CostUSD != nil {
		f.CostUSD = *row.CostUSD
	}
	return f
}
