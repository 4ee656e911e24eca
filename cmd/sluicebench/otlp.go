package main

import (
	"net/http/httptest"

	"github.com/sluicehq/sluice/pkg/telemetry/oteltest"
)

// startOTLPSink starts the in-process OTLP/HTTP trace receiver of -otlp-sink, which decodes
// and counts every span, and sets the ingress's and worker's environment to export every
// trace to it (sampled at 100 %). The returned func stops it and says how many spans came.
func startOTLPSink(cfg *config) (stop func() int64) {
	rec := oteltest.NewReceiver(false)
	srv := httptest.NewServer(rec)
	if cfg.extraEnv == nil {
		cfg.extraEnv = map[string]string{}
	}
	cfg.extraEnv["OTEL_EXPORTER_OTLP_ENDPOINT"] = srv.URL
	cfg.extraEnv["OTEL_TRACES_SAMPLER"] = "always_on"
	return func() int64 {
		srv.Close()
		return rec.Count()
	}
}

// tracingNote describes a run's tracing for the report.
func tracingNote(c reportConfig) string {
	if c.OTLPSpans == nil {
		return "off (no OTEL_EXPORTER_OTLP_ENDPOINT)"
	}
	return "on, every trace sampled, exported over OTLP/HTTP to the bench's in-process sink, which decoded " +
		f0(float64(*c.OTLPSpans)) + " spans"
}
