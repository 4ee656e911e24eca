package providertest

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"sort"
	"strconv"
	"strings"
)

// Mode is one behaviour of the fake upstream.
type Mode string

// The modes an Upstream can answer with. Error modes answer with a JSON error
// body in the route's shape before anything else is sent, streams included.
const (
	// ModeOK answers normally.
	ModeOK Mode = "ok"
	// Mode429 answers 429 Too Many Requests with Retry-After.
	Mode429 Mode = "429"
	// Mode500 answers 500 Internal Server Error.
	Mode500 Mode = "500"
	// Mode502 answers 502 Bad Gateway.
	Mode502 Mode = "502"
	// Mode503 answers 503 Service Unavailable with Retry-After.
	Mode503 Mode = "503"
	// Mode504 answers 504 Gateway Timeout.
	Mode504 Mode = "504"
	// ModeReset hijacks the connection and resets it before writing anything.
	ModeReset Mode = "reset"
	// ModeTruncate answers 200 with a Content-Length larger than the bytes it
	// writes, then closes the connection. A stream is cut in the middle of an event.
	ModeTruncate Mode = "truncate"
	// ModeMidstream sends about half of a stream's events and then cuts the
	// connection, so no [DONE] or message_stop arrives. It truncates a
	// non-stream answer.
	ModeMidstream Mode = "midstream"
	// ModeDrip sends the answer one byte every Config.DripInterval.
	ModeDrip Mode = "drip"
	// ModeHang never answers. It returns when the client goes away (without
	// writing) or the Upstream closes (cutting the connection).
	ModeHang Mode = "hang"
	// ModeGarbage answers 200 application/json with a body that is not JSON.
	ModeGarbage Mode = "garbage"
	// ModeBig answers with a valid completion whose content is
	// Config.BigBytes long. Embeddings treat it as ModeOK.
	ModeBig Mode = "big"
	// ModeBadRequest answers 400 with an invalid_request_error.
	ModeBadRequest Mode = "400"
	// ModeUnauthorized answers 401 with an authentication_error.
	ModeUnauthorized Mode = "401"
)

// modes lists every Mode; a Mode's position is its index into Upstream.requests.
var modes = [...]Mode{
	ModeOK, Mode429, Mode500, Mode502, Mode503, Mode504, ModeReset, ModeTruncate,
	ModeMidstream, ModeDrip, ModeHang, ModeGarbage, ModeBig, ModeBadRequest, ModeUnauthorized,
}

// index returns m's position in modes, or -1 if m is not a Mode.
func (m Mode) index() int {
	for i, x := range modes {
		if x == m {
			return i
		}
	}
	return -1
}

// status returns the HTTP status of an error mode, or 0 for other modes.
func (m Mode) status() int {
	switch m {
	case Mode429, Mode500, Mode502, Mode503, Mode504, ModeBadRequest, ModeUnauthorized:
		n, _ := strconv.Atoi(string(m))
		return n
	}
	return 0
}

// modeFromModel returns the mode named by a model "fake-<mode>" or "<model>:<mode>".
func modeFromModel(model string) (Mode, bool) {
	if s, ok := strings.CutPrefix(model, "fake-"); ok && Mode(s).index() >= 0 {
		return Mode(s), true
	}
	if i := strings.LastIndexByte(model, ':'); i >= 0 && Mode(model[i+1:]).index() >= 0 {
		return Mode(model[i+1:]), true
	}
	return "", false
}

// mix is a weighted random choice of modes. The zero mix always picks ModeOK.
type mix struct {
	modes []Mode
	cum   []int // cum[i] is the sum of the weights of modes[:i+1]
}

// parseMix parses "ok=60,429=10,…". It returns an error for an unknown or
// repeated mode, a weight that is not a non-negative integer, or weights
// summing to zero. An empty string is the zero mix.
func parseMix(s string) (mix, error) {
	var m mix
	if strings.TrimSpace(s) == "" {
		return m, nil
	}
	total := 0
	for item := range strings.SplitSeq(s, ",") {
		name, weight, ok := strings.Cut(strings.TrimSpace(item), "=")
		mode := Mode(strings.TrimSpace(name))
		if !ok {
			return mix{}, fmt.Errorf("mix item %q: want mode=weight", item)
		}
		if mode.index() < 0 {
			return mix{}, fmt.Errorf("mix item %q: unknown mode %q", item, mode)
		}
		if slices.Contains(m.modes, mode) {
			return mix{}, fmt.Errorf("mix item %q: mode %q repeated", item, mode)
		}
		w, err := strconv.Atoi(strings.TrimSpace(weight))
		if err != nil || w < 0 {
			return mix{}, fmt.Errorf("mix item %q: weight must be a non-negative integer", item)
		}
		total += w
		m.modes = append(m.modes, mode)
		m.cum = append(m.cum, total)
	}
	if total == 0 {
		return mix{}, fmt.Errorf("mix %q: weights sum to zero", s)
	}
	return m, nil
}

// pick draws a mode with probability proportional to its weight.
func (m mix) pick(r *rand.Rand) Mode {
	if len(m.modes) == 0 {
		return ModeOK
	}
	x := r.IntN(m.cum[len(m.cum)-1])
	return m.modes[sort.Search(len(m.cum), func(i int) bool { return m.cum[i] > x })]
}
