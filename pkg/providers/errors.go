package providers

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Error is an upstream failure.
type Error struct {
	Provider   string
	StatusCode int           // 0 when no response arrived (network error, timeout)
	RetryAfter time.Duration // from Retry-After / retry-after-ms; 0 if absent
	Type       string        // the upstream's error type, if it sent one
	Code       string
	Message    string
	Err        error // the underlying cause, if any
}

// Error describes the failure as a client may see it: the provider, and the upstream's
// status and own error message, or what went wrong when no answer came. It holds no request
// or response content beyond the upstream's message, and nothing of the channel's base URL:
// a network failure (whose Go error names the URL and addresses) is told in a fixed phrase,
// such as "no response: connection refused". Detail tells it in full, for logs.
func (e *Error) Error() string {
	switch {
	case e.StatusCode != 0 && e.Message != "":
		return fmt.Sprintf("%s upstream: %d: %s", e.Provider, e.StatusCode, e.Message)
	case e.StatusCode != 0:
		return fmt.Sprintf("%s upstream: status %d", e.Provider, e.StatusCode)
	case e.Err != nil:
		return e.Provider + " upstream: " + publicCause(e.Err)
	default:
		return e.Provider + " upstream: " + e.Message
	}
}

// Detail is Error with a network failure told in full (the operation, the URL and the
// addresses Go reports), for the operator's logs. The URL's query and user info, which may
// hold a key, are left out.
func (e *Error) Detail() string {
	if e.StatusCode != 0 || e.Err == nil {
		return e.Error()
	}
	s := e.Err.Error()
	if ue, ok := errors.AsType[*url.Error](e.Err); ok {
		// url.Error quotes its URL with %q.
		s = strings.ReplaceAll(s, strconv.Quote(ue.URL), strconv.Quote(redactURL(ue.URL)))
	}
	return e.Provider + " upstream: " + s
}

// LogValue makes slog log an *Error as its Detail.
func (e *Error) LogValue() slog.Value { return slog.StringValue(e.Detail()) }

// publicCause tells err for a client. An error from the network stack (*url.Error,
// *net.OpError, *net.DNSError) names the upstream's URL, host or address, which are the
// operator's business, so it is told by its kind only; Sluice's own errors are told as they
// are.
func publicCause(err error) string {
	ue, fromDo := errors.AsType[*url.Error](err)
	_, isOp := errors.AsType[*net.OpError](err)
	dns, isDNS := errors.AsType[*net.DNSError](err)
	if !fromDo && !isOp && !isDNS {
		return err.Error()
	}
	what := "connection failed"
	if ne, ok := errors.AsType[net.Error](err); (ok && ne.Timeout()) || errors.Is(err, context.DeadlineExceeded) {
		what = "timed out"
	} else if errors.Is(err, syscall.ECONNREFUSED) {
		what = "connection refused"
	} else if errors.Is(err, syscall.ECONNRESET) {
		what = "connection reset"
	} else if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		what = "connection closed"
	} else if isDNS && dns.IsNotFound {
		what = "host not found"
	} else if isDNS {
		what = "host lookup failed"
	} else if _, ok := errors.AsType[*tls.CertificateVerificationError](err); ok {
		what = "TLS certificate rejected"
	} else if fromDo && ue.Op == "parse" {
		return "invalid base URL"
	}
	if fromDo { // the request itself failed: no answer arrived
		return "no response: " + what
	}
	return what
}

// redactURL is raw without its query, fragment and user info.
func redactURL(raw string) string {
	raw, _, _ = strings.Cut(raw, "#")
	raw, _, hasQuery := strings.Cut(raw, "?")
	if u, err := url.Parse(raw); err == nil && u.User != nil {
		u.User = nil
		raw = u.String()
	}
	if hasQuery {
		raw += "?[redacted]"
	}
	return raw
}

// Unwrap returns the underlying cause.
func (e *Error) Unwrap() error { return e.Err }

// BadCredential reports whether the upstream refused the channel's own API key — a fault of
// the channel, which should be taken out of service — rather than something about this
// request (a content filter's 403, a file it cannot read, a model the account lacks), which
// fails the job alone. It reads each provider's error: OpenAI's code invalid_api_key,
// Anthropic's type authentication_error, Gemini's reason API_KEY_INVALID, and any 401
// (Unauthorized is about the credential, whoever sends it; Azure's invalid-key answer is one).
func (e *Error) BadCredential() bool {
	switch {
	case e.Code == "invalid_api_key", e.Type == "authentication_error", e.Code == "API_KEY_INVALID":
		return true
	default:
		return e.StatusCode == http.StatusUnauthorized
	}
}

// Retryable reports whether another attempt may succeed: no response at all, 408, 409, 429
// and every 5xx. Other 4xx are the caller's fault and are passed through.
func (e *Error) Retryable() bool {
	switch {
	case e.StatusCode == 0:
		return !errors.Is(e.Err, ErrBadResponse) && !errors.Is(e.Err, ErrTooLarge)
	case e.StatusCode == http.StatusRequestTimeout, e.StatusCode == http.StatusConflict,
		e.StatusCode == http.StatusTooManyRequests, e.StatusCode >= 500:
		return true
	}
	return false
}

// Errors wrapped in *Error.
var (
	// ErrIdle means the upstream sent nothing for longer than the idle timeout.
	ErrIdle = errors.New("upstream idle for too long")
	// ErrFirstByte means the upstream had not begun its answer within the first-byte
	// timeout: a hung call. It is retryable and counts against the channel's circuit.
	ErrFirstByte = errors.New("upstream sent no answer within the first-byte timeout")
	// ErrTruncated means the upstream's answer ended before it was complete.
	ErrTruncated = errors.New("upstream answer truncated")
	// ErrBadResponse means the upstream answered 2xx with a body that is not what its API promises.
	ErrBadResponse = errors.New("upstream answer malformed")
	// ErrTooLarge means the upstream's answer is larger than MaxResponseBytes.
	ErrTooLarge = errors.New("upstream answer too large")
)

// invalidRequest is the *Error for a client request that cannot be served.
func invalidRequest(provider, format string, args ...any) *Error {
	return &Error{Provider: provider, StatusCode: http.StatusBadRequest, Type: "invalid_request_error",
		Message: fmt.Sprintf(format, args...)}
}

// badResponse is the *Error for an upstream answer that is not what its API promises.
func badResponse(provider, what string, err error) *Error {
	if err == nil {
		return &Error{Provider: provider, Err: fmt.Errorf("%w: %s", ErrBadResponse, what)}
	}
	return &Error{Provider: provider, Err: fmt.Errorf("%w: %s: %v", ErrBadResponse, what, err)}
}

// unsupportedEndpoint is the 404 for an endpoint an adapter does not serve.
func unsupportedEndpoint(provider, endpoint string) *Error {
	return &Error{Provider: provider, StatusCode: http.StatusNotFound, Type: "invalid_request_error",
		Message: endpoint + " is not supported by " + provider}
}

// readErr names a body that ended early, and an SSE line over the limit.
func readErr(err error) error {
	switch {
	case errors.Is(err, io.ErrUnexpectedEOF):
		return fmt.Errorf("%w: %v", ErrTruncated, err)
	case errors.Is(err, errLineTooLong):
		return fmt.Errorf("%w: %v", ErrTooLarge, err)
	}
	return err
}

// streamReadError is the *Error for a stream that could not be read to its end: one that
// stopped before its terminator is ErrTruncated.
func streamReadError(provider string, err error) *Error {
	if errors.Is(err, io.EOF) {
		err = ErrTruncated
	}
	return &Error{Provider: provider, Err: readErr(err)}
}

// statusError turns a non-2xx response into *Error, reading at most 64 KiB of its body for
// the upstream's message.
func statusError(provider string, resp *http.Response, body io.Reader) *Error {
	e := &Error{Provider: provider, StatusCode: resp.StatusCode, RetryAfter: retryAfter(resp.Header)}
	b, _ := io.ReadAll(io.LimitReader(body, 64<<10))
	var shape struct {
		Error json.RawMessage `json:"error"`
	}
	if json.Unmarshal(b, &shape) == nil && len(shape.Error) > 0 {
		var obj struct {
			Message string          `json:"message"`
			Type    string          `json:"type"`
			Code    json.RawMessage `json:"code"`
		}
		if json.Unmarshal(shape.Error, &obj) == nil {
			e.Message, e.Type = obj.Message, obj.Type
			if c, err := strconv.Unquote(string(obj.Code)); err == nil {
				e.Code = c
			}
		} else if s, err := strconv.Unquote(string(shape.Error)); err == nil {
			e.Message = s
		}
	}
	if e.Message == "" {
		e.Message = http.StatusText(resp.StatusCode)
	}
	return e
}

// retryAfter reads retry-after-ms (OpenAI) or Retry-After (seconds or an HTTP date).
func retryAfter(h http.Header) time.Duration {
	if ms, err := strconv.ParseFloat(h.Get("Retry-After-Ms"), 64); err == nil && ms > 0 {
		return time.Duration(ms * float64(time.Millisecond))
	}
	v := h.Get("Retry-After")
	if v == "" {
		return 0
	}
	if s, err := strconv.ParseFloat(v, 64); err == nil && s > 0 {
		return time.Duration(s * float64(time.Second))
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(time.Until(t), 0)
	}
	return 0
}
