package telemetry

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// shutdownTimeout bounds the flush at shutdown when the caller's context sets no earlier deadline.
const shutdownTimeout = 5 * time.Second

// Enabled reports whether the variables getenv reads turn tracing on: an OTLP endpoint
// (OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) is set, and neither
// OTEL_SDK_DISABLED=true nor OTEL_TRACES_EXPORTER=none turns it off.
func Enabled(getenv func(string) string) bool {
	if getenv("OTEL_EXPORTER_OTLP_ENDPOINT") == "" && getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") == "" {
		return false
	}
	if strings.EqualFold(strings.TrimSpace(getenv("OTEL_SDK_DISABLED")), "true") {
		return false
	}
	return strings.TrimSpace(getenv("OTEL_TRACES_EXPORTER")) != "none"
}

// Setup returns the process's TracerProvider and a shutdown func. While tracing is off (see
// Enabled; the process environment is read) the provider is a no-op one and shutdown does
// nothing. Otherwise spans are batched and exported over OTLP/HTTP (protobuf), with the
// SDK's reading of the standard OTEL_* variables: OTEL_SERVICE_NAME (service, e.g.
// sluice-ingress, when unset), OTEL_RESOURCE_ATTRIBUTES, OTEL_TRACES_SAMPLER[_ARG],
// OTEL_EXPORTER_OTLP_[TRACES_]HEADERS, _TIMEOUT, _COMPRESSION, _CERTIFICATE, OTEL_BSP_*.
// Export errors are logged to log (the SDK's global error handler is set to do so).
//
// shutdown flushes the spans still buffered and stops the exporter; it gives up at ctx's
// deadline, or after 5 s if ctx has none. Setup fails if the exporter cannot be built from
// the variables (say, a malformed endpoint URL).
func Setup(ctx context.Context, service string, log *slog.Logger) (trace.TracerProvider, func(context.Context) error, error) {
	if !Enabled(os.Getenv) {
		return noop.NewTracerProvider(), func(context.Context) error { return nil }, nil
	}
	exp, err := otlptracehttp.New(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("OTLP trace exporter: %w", err)
	}
	// Later options win: OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES override the default name.
	res, err := resource.New(ctx, resource.WithAttributes(attribute.String("service.name", service)),
		resource.WithTelemetrySDK(), resource.WithHost(), resource.WithFromEnv())
	if err != nil {
		log.WarnContext(ctx, "tracing: incomplete resource attributes", "err", err)
	}
	otel.SetErrorHandler(otel.ErrorHandlerFunc(func(err error) {
		log.Warn("tracing: export", "err", err)
	}))
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res))
	log.InfoContext(ctx, "tracing on: exporting spans over OTLP/HTTP", "service", serviceName(res, service))
	shutdown := func(ctx context.Context) error {
		ctx, cancel := context.WithTimeout(ctx, shutdownTimeout)
		defer cancel()
		if err := tp.Shutdown(ctx); err != nil {
			return fmt.Errorf("flush spans: %w", err)
		}
		return nil
	}
	return tp, shutdown, nil
}

// serviceName is res's service.name, or def.
func serviceName(res *resource.Resource, def string) string {
	if res != nil {
		if v, ok := res.Set().Value("service.name"); ok {
			return v.AsString()
		}
	}
	return def
}
