package ingress

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/sluicehq/sluice/pkg/ids"
)

// ShapeRawErrors returns a listener whose connections give the API's error shape, with an
// X-Request-Id, to the error answers net/http writes by itself before any handler runs: 400
// for a malformed request line or header (control bytes, a bad name, a missing or repeated
// Host), 431 for headers over the server's MaxHeaderBytes, 501 for a Transfer-Encoding
// other than chunked, 505 for an unknown HTTP version, and 417 for an Expect other than
// 100-continue. net/http has no hook for these: it writes them straight to the connection
// and closes it. Each is recognised by its exact, complete text (one Write, the plain-text
// form net/http uses, which no handler of ours produces) and replaced as a whole; every
// other write passes through unchanged.
//
// Not covered, because no bytes of an HTTP/1 response are written for them: a connection
// closed after ReadHeaderTimeout, and HTTP/2 (h2c) protocol errors, which are frames.
func ShapeRawErrors(l net.Listener) net.Listener { return &shapeListener{l} }

type shapeListener struct{ net.Listener }

func (l *shapeListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &shapeConn{c}, nil
}

type shapeConn struct{ net.Conn }

// rawErrorWriteTimeout bounds the write of one of net/http's own error answers.
const rawErrorWriteTimeout = 10 * time.Second

func (c *shapeConn) Write(b []byte) (int, error) {
	if out, ok := shapeRawError(b); ok {
		// Written between requests, where no handler set a write deadline (and the last
		// one's may have passed): give it its own, so it neither fails at once nor blocks
		// on a client that reads nothing.
		_ = c.SetWriteDeadline(time.Now().Add(rawErrorWriteTimeout))
		if _, err := c.Conn.Write(out); err != nil {
			return 0, err
		}
		return len(b), nil
	}
	return c.Conn.Write(b)
}

const (
	rawPrefix       = "HTTP/1.1 "
	rawErrorHeaders = "\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n"
	raw417          = "HTTP/1.1 417 Expectation Failed\r\nConnection: close\r\nDate: "
)

// shapeRawError returns the API-shaped replacement of b if b is, in full, one of the error
// answers net/http writes itself.
func shapeRawError(b []byte) ([]byte, bool) {
	if !bytes.HasPrefix(b, []byte(rawPrefix)) {
		return nil, false
	}
	if bytes.HasPrefix(b, []byte(raw417)) && bytes.HasSuffix(b, []byte("\r\nContent-Length: 0\r\n\r\n")) &&
		bytes.Count(b, []byte("\r\n")) == 5 {
		return rawErrorJSON(http.StatusExpectationFailed, "expectation_failed",
			"Only 'Expect: 100-continue' is supported."), true
	}
	status, body, ok := bytes.Cut(b[len(rawPrefix):], []byte(rawErrorHeaders))
	if !ok || len(status) < 4 || status[3] != ' ' || !printableASCII(status) {
		return nil, false
	}
	code, err := strconv.Atoi(string(status[:3]))
	if err != nil || code < 400 || code > 599 {
		return nil, false
	}
	// net/http's body repeats the status line, except for 501's fixed sentence.
	if !bytes.Equal(body, status) && (code != http.StatusNotImplemented || string(body) != "Unsupported transfer encoding") {
		return nil, false
	}
	_, reason, _ := bytes.Cut(status[4:], []byte(": "))
	switch code {
	case http.StatusRequestHeaderFieldsTooLarge:
		return rawErrorJSON(code, "request_header_too_large", "The request's headers are too large."), true
	case http.StatusNotImplemented:
		return rawErrorJSON(code, "unsupported_transfer_encoding",
			"Unsupported Transfer-Encoding: send the body with Content-Length or 'Transfer-Encoding: chunked'."), true
	case http.StatusHTTPVersionNotSupported:
		return rawErrorJSON(code, "http_version_not_supported", "Only HTTP/1.0, HTTP/1.1 and h2c are supported."), true
	}
	msg := "Malformed HTTP request: the request line or a header is invalid (a bad name, a control character, or a missing or repeated Host)."
	if len(reason) > 0 {
		msg = "Malformed HTTP request: " + string(reason) + "."
	}
	return rawErrorJSON(code, "malformed_request", msg), true
}

func printableASCII(b []byte) bool {
	for _, c := range b {
		if c < 0x20 || c > 0x7e {
			return false
		}
	}
	return true
}

// rawErrorJSON is a whole HTTP/1.1 response carrying the API error shape; the connection
// closes after it, as net/http's own answer would have.
func rawErrorJSON(code int, errCode, msg string) []byte {
	var e errorBody
	e.Error.Message, e.Error.Type, e.Error.Code = msg, "invalid_request_error", &errCode
	body, _ := json.Marshal(e)
	return fmt.Appendf(nil, "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"+
		"X-Request-Id: %s\r\nConnection: close\r\n\r\n%s", code, http.StatusText(code), len(body), ids.New("req"), body)
}
