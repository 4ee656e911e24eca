// Package oteltest is an OTLP/HTTP trace receiver that runs in process, for tests and the
// bench: it decodes every export (ExportTraceServiceRequest, protobuf, gzipped or not) and
// keeps its spans and raw bytes, or only counts them.
package oteltest

import (
	"bytes"
	"compress/gzip"
	"encoding/hex"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"
)

// maxExport bounds one export's body.
const maxExport = 64 << 20

// Span is one received span, flattened.
type Span struct {
	Service      string // the resource's service.name
	Name         string
	Kind         string // SPAN_KIND_SERVER, SPAN_KIND_CLIENT, …
	TraceID      string // 32 hex digits
	SpanID       string // 16 hex digits
	ParentSpanID string // "" for a root
	Start, End   time.Time
	Attrs        map[string]any // string, int64, float64 or bool values
	Events       []string       // event names
	Links        []string       // linked span ids
	Error        bool           // status code ERROR
}

// Receiver is an http.Handler for POST /v1/traces. The zero value counts spans only;
// NewReceiver(true) also keeps them.
type Receiver struct {
	keep    bool
	spans   atomic.Int64
	exports atomic.Int64
	bad     atomic.Int64

	mu   sync.Mutex
	kept []Span
	raw  bytes.Buffer
}

// NewReceiver returns a Receiver; keep makes it hold every span and export body (tests),
// else it only counts them (the bench).
func NewReceiver(keep bool) *Receiver { return &Receiver{keep: keep} }

// ServeHTTP decodes one export and answers 200 with an empty ExportTraceServiceResponse,
// or 400 for a body that is not one.
func (r *Receiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	if req.Method != http.MethodPost {
		http.Error(w, "POST only", http.StatusMethodNotAllowed)
		return
	}
	body := io.LimitReader(req.Body, maxExport)
	if req.Header.Get("Content-Encoding") == "gzip" {
		zr, err := gzip.NewReader(body)
		if err != nil {
			r.bad.Add(1)
			http.Error(w, "bad gzip", http.StatusBadRequest)
			return
		}
		defer zr.Close()
		body = io.LimitReader(zr, maxExport)
	}
	data, err := io.ReadAll(body)
	var msg coltracepb.ExportTraceServiceRequest
	if err == nil {
		err = proto.Unmarshal(data, &msg)
	}
	if err != nil {
		r.bad.Add(1)
		http.Error(w, "not an ExportTraceServiceRequest", http.StatusBadRequest)
		return
	}
	r.exports.Add(1)
	n := 0
	var spans []Span
	for _, rs := range msg.GetResourceSpans() {
		service := ""
		for _, kv := range rs.GetResource().GetAttributes() {
			if kv.GetKey() == "service.name" {
				service = kv.GetValue().GetStringValue()
			}
		}
		for _, ss := range rs.GetScopeSpans() {
			for _, s := range ss.GetSpans() {
				n++
				if r.keep {
					spans = append(spans, flatten(service, s))
				}
			}
		}
	}
	r.spans.Add(int64(n))
	if r.keep {
		r.mu.Lock()
		r.kept = append(r.kept, spans...)
		r.raw.Write(data)
		r.mu.Unlock()
	}
	out, _ := proto.Marshal(&coltracepb.ExportTraceServiceResponse{})
	w.Header().Set("Content-Type", "application/x-protobuf")
	_, _ = w.Write(out)
}

func flatten(service string, s *tracepb.Span) Span {
	sp := Span{Service: service, Name: s.GetName(), Kind: s.GetKind().String(), TraceID: hexID(s.GetTraceId()),
		SpanID: hexID(s.GetSpanId()), ParentSpanID: hexID(s.GetParentSpanId()),
		Start: time.Unix(0, int64(s.GetStartTimeUnixNano())), End: time.Unix(0, int64(s.GetEndTimeUnixNano())),
		Attrs: map[string]any{}, Error: s.GetStatus().GetCode() == tracepb.Status_STATUS_CODE_ERROR}
	for _, kv := range s.GetAttributes() {
		sp.Attrs[kv.GetKey()] = value(kv.GetValue())
	}
	for _, e := range s.GetEvents() {
		sp.Events = append(sp.Events, e.GetName())
	}
	for _, l := range s.GetLinks() {
		sp.Links = append(sp.Links, hexID(l.GetSpanId()))
	}
	return sp
}

// Spans returns the spans received so far (NewReceiver(true)).
func (r *Receiver) Spans() []Span {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Span(nil), r.kept...)
}

// Raw returns every export body received so far, decompressed, one after the other
// (NewReceiver(true)): what to search for text that must never be exported.
func (r *Receiver) Raw() []byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	return bytes.Clone(r.raw.Bytes())
}

// Count returns how many spans have been received.
func (r *Receiver) Count() int64 { return r.spans.Load() }

// Exports returns how many exports were decoded, and how many bodies were refused.
func (r *Receiver) Exports() (ok, bad int64) { return r.exports.Load(), r.bad.Load() }

func hexID(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	return hex.EncodeToString(b)
}

func value(v *commonpb.AnyValue) any {
	switch x := v.GetValue().(type) {
	case *commonpb.AnyValue_StringValue:
		return x.StringValue
	case *commonpb.AnyValue_IntValue:
		return x.IntValue
	case *commonpb.AnyValue_DoubleValue:
		return x.DoubleValue
	case *commonpb.AnyValue_BoolValue:
		return x.BoolValue
	}
	return v.String()
}
