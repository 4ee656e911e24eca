// Package telemetry is Sluice's OpenTelemetry tracing: the process's TracerProvider (Setup),
// a Tracer that costs nothing while tracing is off, the W3C trace context carried in NATS
// message headers (Inject, Extract), the attribute names spans use (the GenAI semantic
// conventions where they fit), and the attributes every log line about a job carries
// (JobAttrs).
//
// Tracing is off unless OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is
// set; the OpenTelemetry SDK then reads the standard OTEL_* variables from the process
// environment itself (sampler, headers, timeouts, batching, resource attributes).
//
// Invariants: no span carries a prompt, an answer, an API key or any other secret: only
// ids, model names, sizes, statuses and token counts. While tracing is off, starting a span
// allocates nothing and no header is written unless a client's trace context is being passed on.
package telemetry
