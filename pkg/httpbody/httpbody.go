// Package httpbody holds the one helper that releases an HTTP response in Sluice.
//
// The outage Sluice was built after grew to 169,000 goroutines because error responses
// from upstreams were never closed. So every response Sluice's code receives — upstream
// calls, webhook deliveries, health checks, and the requests its own tools make — is
// released here, on every path, and nowhere else.
package httpbody

import (
	"io"
	"net/http"
)

// drainLimit is how much of an unread remainder Close reads before it closes: enough for an
// error body, so that the connection goes back to the pool, and no more, so that a huge or
// endless body cannot hold the caller.
const drainLimit = 64 << 10

// Close releases resp: it drains at most 64 KiB of what is left of the body, then closes it.
func Close(resp *http.Response) {
	_, _ = io.CopyN(io.Discard, resp.Body, drainLimit)
	_ = resp.Body.Close()
}
