package ingress

import (
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"

	"github.com/sluicehq/sluice/pkg/jobs"
	"github.com/sluicehq/sluice/pkg/store"
)

// The API's error vocabulary is pkg/jobs's (jobs.NewError, jobs.BadRequest, …); these are
// the ingress's short names for it.
var (
	apiError   = jobs.NewError
	badRequest = jobs.BadRequest
)

var (
	errInvalidKey = apiError(http.StatusUnauthorized, "authentication_error", "invalid_api_key",
		"Incorrect, missing, revoked or expired API key. Send it as 'Authorization: Bearer sk-sl-…'.")
	errOverloaded = func(msg string) *jobs.APIError { return jobs.Overloaded("overloaded", msg) }
	// errDBUnavailable answers a request that needs Postgres while it cannot be reached.
	errDBUnavailable = func() *jobs.APIError { return errOverloaded("The database is unavailable; retry shortly.") }
)

// errorBody is the OpenAI error shape.
type errorBody struct {
	Error struct {
		Message string  `json:"message"`
		Type    string  `json:"type"`
		Param   *string `json:"param"`
		Code    *string `json:"code"`
	} `json:"error"`
}

// anthropicErrorBody is Anthropic's error shape, used on /v1/messages.
type anthropicErrorBody struct {
	Type  string `json:"type"`
	Error struct {
		Type    string `json:"type"`
		Message string `json:"message"`
	} `json:"error"`
}

// errUnstorable answers a request whose values Postgres refused (store.ErrPermanent): the
// client's fault, so a 400 — though reaching it means a check at the edge is missing.
var errUnstorable = apiError(http.StatusBadRequest, "invalid_request_error", "invalid_value",
	"The request holds a value that cannot be stored (for example a NUL character or an out-of-range number).")

// writeError writes err as an API error: *jobs.APIError with its status, a value Postgres
// refused as a 400, Postgres out of reach as a 503 with Retry-After, anything else as a
// generic 500 whose detail goes only to the log.
func (s *Server) writeError(w http.ResponseWriter, r *http.Request, err error) {
	e, ok := errors.AsType[*jobs.APIError](err)
	if !ok && errors.Is(err, store.ErrPermanent) {
		// A validation defect: say so in the log, where it can be found and fixed.
		s.log.WarnContext(r.Context(), "input reached the database unvalidated", "err", err, "path", r.URL.Path,
			"request_id", w.Header().Get("X-Request-Id"))
		e, ok = errUnstorable, true
	}
	if !ok && store.Unavailable(err) {
		s.log.WarnContext(r.Context(), "postgres unavailable", "err", err, "path", r.URL.Path,
			"request_id", w.Header().Get("X-Request-Id"))
		e, ok = errDBUnavailable(), true
	}
	if !ok {
		s.log.ErrorContext(r.Context(), "internal error", "err", err, "path", r.URL.Path, "request_id", w.Header().Get("X-Request-Id"))
		e = jobs.Internal()
	}
	if e.RetryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(e.RetryAfter))
	}
	status := e.Status
	if status < 400 || status > 599 {
		status = http.StatusBadGateway // e.g. 499 for a canceled job never reaches a client as such
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(errorJSON(r, e))
}

// errorJSON renders e in the shape the route's clients expect.
func errorJSON(r *http.Request, e *jobs.APIError) any {
	if r.URL.Path == jobs.EndpointMessages || strings.HasPrefix(r.URL.Path, jobs.EndpointMessages+"/") {
		var b anthropicErrorBody
		b.Type = "error"
		b.Error.Type = anthropicErrorType(e)
		b.Error.Message = e.Message
		return b
	}
	var b errorBody
	b.Error.Message, b.Error.Type = e.Message, e.Type
	if e.Param != "" {
		b.Error.Param = &e.Param
	}
	if e.Code != "" {
		b.Error.Code = &e.Code
	}
	return b
}

// anthropicErrorType maps a status to Anthropic's error types.
func anthropicErrorType(e *jobs.APIError) string {
	switch e.Status {
	case 400, 413, 415:
		return "invalid_request_error"
	case 401:
		return "authentication_error"
	case 403:
		return "permission_error"
	case 404:
		return "not_found_error"
	case 429:
		return "rate_limit_error"
	case 503, 529:
		return "overloaded_error"
	case 504:
		return "timeout_error"
	}
	if e.Status >= 500 {
		return "api_error"
	}
	return e.Type
}

// writeJSON writes v with status.
func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
