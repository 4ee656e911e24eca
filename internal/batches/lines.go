// Package batches runs batches (the Batch API of ../shared/API.md): a runner in every worker
// process leases unfinished batches from Postgres, validates each input file, publishes its
// lines as jobs on the batch-line stream (jobs.EnsureBatchStream, below interactive traffic
// in the workers' slots), follows their outcomes in the rows the settlers write, and writes
// the output and error files when every line has ended.
package batches

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/sluicehq/sluice/pkg/jobs"
)

// lineScanner reads the non-blank lines of a JSONL file, numbering them from 0.
type lineScanner struct {
	sc   *bufio.Scanner
	n    int // lines returned so far
	line []byte
	long bool // the current line is longer than the maximum (not returned in line)
}

func newLineScanner(r io.Reader, maxLine int) *lineScanner {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), maxLine+1)
	return &lineScanner{sc: sc}
}

// next advances to the next non-blank line; false at the end (or on a read error, in err).
func (l *lineScanner) next() bool {
	for l.sc.Scan() {
		b := bytes.TrimSpace(l.sc.Bytes())
		if len(b) == 0 {
			continue
		}
		l.line, l.long = b, false
		l.n++
		return true
	}
	if errors.Is(l.sc.Err(), bufio.ErrTooLong) {
		// A line over the limit: report it, then the scanner cannot go on.
		l.line, l.long = nil, true
		l.n++
		return true
	}
	return false
}

func (l *lineScanner) err() error {
	if errors.Is(l.sc.Err(), bufio.ErrTooLong) {
		return nil
	}
	return l.sc.Err()
}

// inputLine is one line of an OpenAI batch input file.
type inputLine struct {
	CustomID *string         `json:"custom_id"`
	Method   string          `json:"method"`
	URL      string          `json:"url"`
	Body     json.RawMessage `json:"body"`
}

// lineError is one entry of a batch's errors (OpenAI's BatchError).
type lineError struct {
	Code    string  `json:"code"`
	Message string  `json:"message"`
	Param   *string `json:"param"`
	Line    int     `json:"line"` // 1-based
}

func lineErr(n int, code, param, msg string) *lineError {
	e := &lineError{Code: code, Message: msg, Line: n + 1}
	if param != "" {
		e.Param = &param
	}
	return e
}

// checker validates the lines of one batch.
type checker struct {
	endpoint string
	served   func(model string) bool
	allowed  func(model string) bool
	seen     map[[16]byte]bool
}

// parsed is a valid line: what its job needs.
type parsed struct {
	customID, model string
	body            json.RawMessage
}

// check validates line n (its text raw, nil if too long).
func (c *checker) check(n int, raw []byte, long bool) (*parsed, *lineError) {
	if long {
		return nil, lineErr(n, "line_too_large", "", "The line is larger than a job may be.")
	}
	var in inputLine
	if err := json.Unmarshal(raw, &in); err != nil {
		return nil, lineErr(n, "invalid_json_line", "", "The line is not a JSON object.")
	}
	switch {
	case in.CustomID == nil || *in.CustomID == "":
		return nil, lineErr(n, "missing_required_parameter", "custom_id", "Each line needs a non-empty 'custom_id'.")
	case len(*in.CustomID) > 512:
		return nil, lineErr(n, "invalid_value", "custom_id", "'custom_id' is at most 512 characters.")
	case in.Method != "POST":
		return nil, lineErr(n, "invalid_value", "method", "'method' must be POST.")
	case in.URL != c.endpoint:
		return nil, lineErr(n, "mismatched_url", "url",
			fmt.Sprintf("The line's 'url' must be the batch's endpoint, %s.", c.endpoint))
	}
	h := sha256.Sum256([]byte(*in.CustomID))
	var k [16]byte
	copy(k[:], h[:])
	if c.seen[k] {
		return nil, lineErr(n, "duplicate_custom_id", "custom_id", "The 'custom_id' is used by an earlier line.")
	}
	c.seen[k] = true
	model, e := checkBody(c.endpoint, in.Body)
	if e != "" {
		return nil, lineErr(n, "invalid_request", "body", e)
	}
	switch {
	case !c.served(model):
		return nil, lineErr(n, "model_not_found", "body.model", fmt.Sprintf("The model %q does not exist.", model))
	case !c.allowed(model):
		return nil, lineErr(n, "model_not_allowed", "body.model",
			fmt.Sprintf("This API key may not use the model %q.", model))
	}
	return &parsed{customID: *in.CustomID, model: model, body: in.Body}, nil
}

// checkBody checks what a worker needs of a request body for endpoint, as the ingress's
// relay does, and returns its model, or a problem.
func checkBody(endpoint string, body json.RawMessage) (model, problem string) {
	var m map[string]json.RawMessage
	if len(body) == 0 || body[0] != '{' || json.Unmarshal(body, &m) != nil {
		return "", "'body' must be a JSON object."
	}
	if json.Unmarshal(m["model"], &model) != nil || strings.TrimSpace(model) == "" {
		return "", "'body.model' is required and must be a non-empty string."
	}
	var stream bool
	if s, ok := m["stream"]; ok && json.Unmarshal(s, &stream) == nil && stream {
		return "", "Batch requests cannot stream: leave out 'stream' or set it to false."
	}
	has := func(k string) bool { v, ok := m[k]; return ok && string(v) != "null" }
	switch endpoint {
	case jobs.EndpointChat, jobs.EndpointMessages:
		if v := m["messages"]; len(v) < 2 || v[0] != '[' || string(bytes.TrimSpace(v[1:])) == "]" {
			return "", "'body.messages' is required and must be a non-empty array."
		}
		var mt int
		if endpoint == jobs.EndpointMessages && (json.Unmarshal(m["max_tokens"], &mt) != nil || mt < 1) {
			return "", "'body.max_tokens' is required and must be a positive integer."
		}
	case jobs.EndpointCompletions:
		if !has("prompt") {
			return "", "'body.prompt' is required."
		}
	case jobs.EndpointEmbeddings, jobs.EndpointResponses:
		if !has("input") {
			return "", "'body.input' is required."
		}
	}
	return model, ""
}

// Checker validates batch input lines (in OpenAI's format) as the runner will, for an API
// that must refuse a bad request at once (Anthropic's Message Batches).
type Checker struct{ c checker }

// NewChecker returns a Checker for lines of endpoint; served and allowed say whether a model
// is served and whether the batch's key may use it.
func NewChecker(endpoint string, served, allowed func(model string) bool) *Checker {
	return &Checker{c: checker{endpoint: endpoint, served: served, allowed: allowed, seen: map[[16]byte]bool{}}}
}

// Check validates line n (0-based); ok is false with the problem's code, param and message.
func (c *Checker) Check(n int, line []byte) (code, param, message string, ok bool) {
	_, e := c.c.check(n, line, false)
	if e == nil {
		return "", "", "", true
	}
	if e.Param != nil {
		param = *e.Param
	}
	return e.Code, param, e.Message, false
}
