package jobs

import (
	"fmt"
	"net/http"
	"strings"
)

// APIError is the error object of ../shared/API.md, plus the HTTP status it goes with.
// Every layer builds its errors with the constructors below, so one condition has one
// type, one code and one message wherever it is raised: the ingress, the worker, or a
// row written by SQL (store.ExpireOverdue is handed Timeout()).
type APIError struct {
	Status  int    `json:"status_code"`
	Message string `json:"message"`
	Type    string `json:"type"`
	Param   string `json:"param,omitempty"`
	Code    string `json:"code,omitempty"`
	// RetryAfter, in seconds, is sent as a Retry-After header when set.
	RetryAfter int `json:"retry_after,omitempty"`
}

// Error returns the message.
func (e *APIError) Error() string { return e.Message }

// StatusClientClosed is the status of a job that ended because it was cancelled or its
// caller left (nginx's 499). It never reaches a client as an HTTP status.
const StatusClientClosed = 499

// NewError returns an APIError. Prefer the named constructors; NewError is for conditions
// raised in one place only.
func NewError(status int, typ, code, message string) *APIError {
	return &APIError{Status: status, Type: typ, Code: code, Message: message}
}

// BadRequest is a 400 invalid_request_error about param ("" when no one field is at fault).
func BadRequest(param, message string) *APIError {
	return &APIError{Status: http.StatusBadRequest, Type: "invalid_request_error", Param: param, Message: message}
}

// Overloaded is a 503 overloaded_error with Retry-After: 1: a condition that passes.
func Overloaded(code, message string) *APIError {
	return &APIError{Status: http.StatusServiceUnavailable, Type: "overloaded_error", Code: code, Message: message,
		RetryAfter: 1}
}

// Timeout is the 504 of a job that had no result within its deadline.
func Timeout() *APIError {
	return &APIError{Status: http.StatusGatewayTimeout, Type: "timeout_error", Code: "job_timeout",
		Message: "No result within the job's deadline."}
}

// Canceled is the error of a job cancelled through the API.
func Canceled() *APIError {
	return &APIError{Status: StatusClientClosed, Type: "canceled", Code: "job_canceled", Message: "The job was canceled."}
}

// ClientGone is the error of a sync job whose caller went away.
func ClientGone() *APIError {
	return &APIError{Status: StatusClientClosed, Type: "canceled", Code: "client_closed_request",
		Message: "The client closed the request."}
}

// Internal is a 500 whose details go only to the log.
func Internal() *APIError {
	return &APIError{Status: http.StatusInternalServerError, Type: "internal_error",
		Message: "The server had an error while processing your request."}
}

// UpstreamError is a 502 upstream_error with code ("" for none).
func UpstreamError(code, message string) *APIError {
	return &APIError{Status: http.StatusBadGateway, Type: "upstream_error", Code: code, Message: message}
}

// UpstreamFailed is the 502 of an upstream that kept failing; detail must hold no URL or
// secret (providers.Error's text does not).
func UpstreamFailed(attempts int, detail string) *APIError {
	return UpstreamError("upstream_failed", Clean(fmt.Sprintf("Upstream failed after %d attempt(s): %s", attempts, detail)))
}

// StreamGap ends a stream a part of which was lost on its way to the caller.
func StreamGap(message string) *APIError { return UpstreamError("stream_gap", message) }

// StreamLost ends a stream whose events may have been lost (NATS was away).
func StreamLost(message string) *APIError { return UpstreamError("stream_lost", message) }

// Clean makes an upstream's text safe to store and show: valid UTF-8, no NUL.
func Clean(s string) string {
	return strings.ToValidUTF8(strings.ReplaceAll(s, "\x00", ""), "\uFFFD")
}
