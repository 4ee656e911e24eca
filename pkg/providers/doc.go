// Package providers holds the Provider contract and one adapter per upstream family.
//
// Invariants:
//   - Every *http.Response is released by httpbody.Close (bounded drain, then Close) on every path;
//     no other code closes a response body.
//   - Every call runs under the caller's context, which carries the job's deadline, plus an idle
//     watchdog that cancels the call when the upstream sends nothing for IdleTimeout.
//   - Bodies are read through limits: an upstream cannot make Sluice hold more than
//     MaxResponseBytes of one answer, or more than MaxLineBytes of one SSE line.
//   - Upstream failures become *Error, which says whether a retry may help.
package providers
