package telemetry

import (
	"context"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/sluicehq/sluice/pkg/tokens"
)

// Attribute names. The gen_ai.* ones are the OpenTelemetry GenAI semantic conventions;
// sluice.* ones are Sluice's own. None carries a prompt, an answer or a secret.
const (
	GenAIOperationName     = attribute.Key("gen_ai.operation.name")
	GenAIProviderName      = attribute.Key("gen_ai.provider.name")
	GenAIRequestModel      = attribute.Key("gen_ai.request.model")
	GenAIUsageInputTokens  = attribute.Key("gen_ai.usage.input_tokens")
	GenAIUsageOutputTokens = attribute.Key("gen_ai.usage.output_tokens")

	HTTPRequestMethod  = attribute.Key("http.request.method")
	HTTPRoute          = attribute.Key("http.route")
	HTTPResponseStatus = attribute.Key("http.response.status_code")
	ErrorType          = attribute.Key("error.type")

	MessagingSystem      = attribute.Key("messaging.system")
	MessagingOperation   = attribute.Key("messaging.operation.type")
	MessagingDestination = attribute.Key("messaging.destination.name")

	JobID      = attribute.Key("sluice.job.id")
	KeyID      = attribute.Key("sluice.key.id")
	RequestID  = attribute.Key("sluice.request.id")
	ChannelID  = attribute.Key("sluice.channel.id")
	Attempt    = attribute.Key("sluice.attempt")  // upstream attempt of a job: 1, 2, …
	Delivery   = attribute.Key("sluice.delivery") // JetStream delivery of a job: 1, 2, …
	JobStatus  = attribute.Key("sluice.job.status")
	SettleVia  = attribute.Key("sluice.settle_via")
	Stream     = attribute.Key("sluice.stream")
	ReplyParts = attribute.Key("sluice.reply.parts")
)

// ProviderName is gen_ai.provider.name for a channel's provider: the convention's
// well-known value where there is one, else Sluice's name (fake).
func ProviderName(provider string) string {
	switch provider {
	case "azure":
		return "azure.ai.openai"
	case "gemini":
		return "gcp.gemini"
	}
	return provider // openai, anthropic, fake
}

// OperationName is gen_ai.operation.name for a job's endpoint.
func OperationName(endpoint string) string {
	switch endpoint {
	case "/v1/completions":
		return "text_completion"
	case "/v1/embeddings":
		return "embeddings"
	}
	return "chat" // chat completions, messages, responses
}

// Usage sets u's token counts on span, if it records and u is known.
func Usage(span trace.Span, u *tokens.Usage) {
	if u == nil || !span.IsRecording() {
		return
	}
	span.SetAttributes(GenAIUsageInputTokens.Int64(u.PromptTokens), GenAIUsageOutputTokens.Int64(u.CompletionTokens))
}

// TraceID is the trace id of ctx's span context as 32 hex digits, or "" when there is none.
func TraceID(ctx context.Context) string {
	return TraceIDOf(trace.SpanContextFromContext(ctx))
}

// TraceIDOf is sc's trace id as 32 hex digits, or "" when sc is not valid.
func TraceIDOf(sc trace.SpanContext) string {
	if !sc.HasTraceID() {
		return ""
	}
	return sc.TraceID().String()
}

// JobAttrs are the key-value pairs every log line about a job carries, for slog's With or
// a log call: job_id, request_id (the X-Request-Id of the request that made the job) and
// trace_id (32 hex digits), each "" when unknown, so that every such line has all three.
func JobAttrs(jobID, requestID, traceID string) []any {
	return []any{"job_id", jobID, "request_id", requestID, "trace_id", traceID}
}
