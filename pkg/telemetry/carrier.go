package telemetry

import (
	"context"
	"net/http"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// Header names of the W3C trace context (lowercase, as the propagator writes them: NATS
// header names are case-sensitive).
const (
	HeaderTraceparent = "traceparent"
	HeaderTracestate  = "tracestate"
)

// propagator is the W3C Trace Context format, in HTTP and NATS headers alike.
var propagator = propagation.TraceContext{}

// HeaderCarrier adapts a NATS message header to propagation.TextMapCarrier.
type HeaderCarrier nats.Header

// Get returns the first value of key, or "".
func (c HeaderCarrier) Get(key string) string { return nats.Header(c).Get(key) }

// Set replaces key's values with value.
func (c HeaderCarrier) Set(key, value string) { nats.Header(c).Set(key, value) }

// Keys lists the header's names.
func (c HeaderCarrier) Keys() []string {
	keys := make([]string, 0, len(c))
	for k := range c {
		keys = append(keys, k)
	}
	return keys
}

// Inject writes ctx's span context (traceparent, and tracestate if it has one) into h and
// returns h, made if nil. When ctx holds no valid span context it writes nothing and
// returns h as it was (nil stays nil: no header map is made).
func Inject(ctx context.Context, h nats.Header) nats.Header {
	if !trace.SpanContextFromContext(ctx).IsValid() {
		return h
	}
	if h == nil {
		h = nats.Header{}
	}
	propagator.Inject(ctx, HeaderCarrier(h))
	return h
}

// Extract returns ctx carrying the remote span context of h's traceparent (and
// tracestate), or ctx itself when h has none or a malformed one.
func Extract(ctx context.Context, h nats.Header) context.Context {
	if h.Get(HeaderTraceparent) == "" {
		return ctx
	}
	return propagator.Extract(ctx, HeaderCarrier(h))
}

// SpanContextOf is the remote span context of h's traceparent; not valid when h has none.
func SpanContextOf(h nats.Header) trace.SpanContext {
	if h.Get(HeaderTraceparent) == "" {
		return trace.SpanContext{}
	}
	return trace.SpanContextFromContext(propagator.Extract(context.Background(), HeaderCarrier(h)))
}

// maxTracestate bounds the tracestate passed on from a client (the W3C minimum a vendor
// must pass on is 512 characters); a longer one is dropped, so that a job's headers stay small.
const maxTracestate = 512

// ExtractHTTP is Extract for a client's HTTP request headers: it continues the client's
// trace. A tracestate longer than 512 bytes (all its headers together) is left behind (the traceparent still counts).
func ExtractHTTP(ctx context.Context, h http.Header) context.Context {
	tp, ok := h["Traceparent"]
	if !ok {
		return ctx
	}
	n := 0
	for _, v := range h["Tracestate"] {
		n += len(v) + 1
	}
	if n > maxTracestate+1 {
		h = http.Header{"Traceparent": tp}
	}
	return propagator.Extract(ctx, propagation.HeaderCarrier(h))
}
