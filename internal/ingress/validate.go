package ingress

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"unicode/utf8"
)

// validText reports whether s is text Postgres can store and compare as the client meant
// it: valid UTF-8 without NUL. Anything else would reach a text column as a data error
// (SQLSTATE 22021), which is the client's fault and must never read as a server error.
func validText(s string) bool {
	return utf8.ValidString(s) && strings.IndexByte(s, 0) < 0
}

// hasControl reports whether s holds an ASCII control character (or DEL).
func hasControl(s string) bool {
	return strings.IndexFunc(s, func(r rune) bool { return r < 0x20 || r == 0x7f }) >= 0
}

// maxIdempotencyKey is the longest Idempotency-Key accepted.
const maxIdempotencyKey = 255

// checkInput wraps a route's handler with the checks of what every route reads before its
// body: the path's wildcards, the query string and the Idempotency-Key header. It runs
// once per request, for every route, so no handler passes unchecked request-line text to
// Postgres. On the admin routes a path id that is not valid text names nothing (404, as for
// any unknown id); anywhere else a bad value is a 400 naming it (a client's /v1/jobs/%FF is
// a malformed request, which it must not retry).
func (s *Server) checkInput(pattern string, next http.HandlerFunc) http.HandlerFunc {
	wild := wildcards(pattern)
	return func(w http.ResponseWriter, r *http.Request) {
		if err := checkRequestLine(r, pattern, wild); err != nil {
			s.writeError(w, r, err)
			return
		}
		next(w, r)
	}
}

func checkRequestLine(r *http.Request, pattern string, wild []string) error {
	for _, name := range wild {
		if v := r.PathValue(name); !validText(v) || hasControl(v) {
			if name == "id" && (strings.HasPrefix(pattern, "/admin/") || strings.Contains(pattern, " /admin/")) {
				what := resourceOf(pattern)
				return apiError(http.StatusNotFound, "not_found_error", what+"_not_found",
					fmt.Sprintf("No %s with that id.", what))
			}
			return badRequest(name, fmt.Sprintf("The path's '%s' must be valid UTF-8 without control characters.", name))
		}
	}
	q, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		return badRequest("", "The query string is malformed.")
	}
	for k, vs := range q {
		if !validText(k) {
			return badRequest("", "Query parameter names must be valid UTF-8 without NUL characters.")
		}
		for _, v := range vs {
			if !validText(v) {
				return badRequest(k, fmt.Sprintf("Query parameter '%s' must be valid UTF-8 without NUL characters.", k))
			}
		}
	}
	if idem := r.Header.Values("Idempotency-Key"); len(idem) > 0 {
		const param = "Idempotency-Key"
		switch {
		case len(idem) > 1:
			return badRequest(param, "Send at most one Idempotency-Key header.")
		case len(idem[0]) > maxIdempotencyKey:
			return badRequest(param, fmt.Sprintf("The Idempotency-Key header is at most %d characters.", maxIdempotencyKey))
		case !validText(idem[0]) || hasControl(idem[0]):
			return badRequest(param, "The Idempotency-Key header must be valid UTF-8 without control characters.")
		}
	}
	return nil
}

// wildcards returns the names of a ServeMux pattern's wildcards: "id" for {id}, "model"
// for {model...}.
func wildcards(pattern string) []string {
	var names []string
	for rest := pattern; ; {
		i := strings.IndexByte(rest, '{')
		if i < 0 {
			return names
		}
		j := strings.IndexByte(rest[i:], '}')
		if j < 0 {
			return names
		}
		names = append(names, strings.TrimSuffix(rest[i+1:i+j], "..."))
		rest = rest[i+j+1:]
	}
}

// resourceOf names what a pattern's {id} identifies, from the path segment before it:
// "key" for /admin/v1/keys/{id}, "job" for /v1/jobs/{id}/cancel.
func resourceOf(pattern string) string {
	before, _, _ := strings.Cut(pattern, "/{id}")
	seg := before[strings.LastIndexByte(before, '/')+1:]
	switch {
	case strings.HasSuffix(seg, "ches"): // batches
		return strings.TrimSuffix(seg, "es")
	case strings.HasSuffix(seg, "s"):
		return strings.TrimSuffix(seg, "s")
	}
	return "object"
}
