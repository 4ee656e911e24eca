package jobs

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"reflect"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/sluicehq/sluice/pkg/tokens"
)

// The fuzz tests run their seeds (here and in testdata/fuzz) with every `go test`; explore with
//
//	go test -run='^$' -fuzz=FuzzDecode -fuzztime=60s ./pkg/jobs/
//
// and commit what they find to testdata/fuzz/<FuzzName>/ once it is fixed.

// FuzzDecode: Decode never panics and fails only with ErrBadJob; a job it accepts has the
// fields it promises, re-encodes, decodes to the same job, and has a body the worker can
// route (setModel, the worker's first use of it) without panicking.
func FuzzDecode(f *testing.F) {
	now := time.Date(2026, 11, 26, 10, 0, 0, 123456789, time.UTC)
	for _, j := range []*Job{
		{ID: "job_1", KeyID: "key_1", Endpoint: EndpointChat, Model: "gpt-4o-mini",
			Body:      json.RawMessage(`{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}`),
			CreatedAt: now, Deadline: now.Add(15 * time.Minute), Reply: "sluice.reply.abc.def"},
		{ID: "job_2", KeyID: "key_2", Endpoint: EndpointChat, Model: "m", Body: json.RawMessage(`{"model":"m","stream":true}`),
			Stream: true, WantUsageChunk: true, CreatedAt: now, Deadline: now.Add(time.Second), Reply: "r"},
		{ID: "job_3", KeyID: "key_3", Endpoint: EndpointEmbeddings, Model: "e", Body: json.RawMessage(`{"model":"e","input":"x"}`),
			Async: true, CreatedAt: now.In(time.FixedZone("", -7*3600)), Deadline: now.Add(time.Hour)},
	} {
		b, err := j.Encode()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		j, err := Decode(data)
		if err != nil {
			if !errors.Is(err, ErrBadJob) || j != nil {
				t.Fatalf("Decode = %v, %v; want nil and an error wrapping ErrBadJob", j, err)
			}
			return
		}
		if j.ID == "" || j.KeyID == "" || j.Endpoint == "" || j.Deadline.IsZero() {
			t.Fatalf("Decode accepted a job without id, key, endpoint or deadline: %+v", j)
		}
		enc, err := j.Encode()
		if err != nil {
			t.Fatalf("a decoded job does not re-encode: %v", err)
		}
		j2, err := Decode(enc)
		if err != nil {
			t.Fatalf("a re-encoded job does not decode: %v\n%s", err, enc)
		}
		if !sameJob(j, j2) {
			t.Fatalf("decode → encode → decode changed the job:\n%+v\n%+v", j, j2)
		}
		if enc2, err := j2.Encode(); err != nil || !bytes.Equal(enc, enc2) {
			t.Fatalf("encoding is not stable:\n%s\n%s (%v)", enc, enc2, err)
		}
	})
}

// sameJob compares jobs field by field: times by instant, bodies by sameJSON, and not the
// form they came in. (The module does not depend on go-cmp.)
func sameJob(a, b *Job) bool {
	x, y := *a, *b
	if !x.CreatedAt.Equal(y.CreatedAt) || !x.Deadline.Equal(y.Deadline) || !sameJSON(x.Body, y.Body) {
		return false
	}
	x.CreatedAt, x.Deadline, x.Body, x.jsonWire = time.Time{}, time.Time{}, nil, false
	y.CreatedAt, y.Deadline, y.Body, y.jsonWire = time.Time{}, time.Time{}, nil, false
	return reflect.DeepEqual(x, y)
}

// sameJSON reports whether two raw JSON values are the same once written by Encode, which
// compacts them, escapes HTML characters, and writes an absent value as null.
func sameJSON(a, b json.RawMessage) bool {
	canon := func(r json.RawMessage) []byte {
		if len(r) == 0 {
			return []byte("null")
		}
		var c, h bytes.Buffer
		if json.Compact(&c, r) != nil {
			return r
		}
		json.HTMLEscape(&h, c.Bytes())
		return h.Bytes()
	}
	return bytes.Equal(canon(a), canon(b))
}

// FuzzParseReply: on the header-based messages of workers before replyV1, ParseReply never
// panics, accepts only the three kinds with integer sequence and attempt numbers (and a final
// only with a JSON outcome), and returns exactly what the headers and payload carried.
func FuzzParseReply(f *testing.F) {
	f.Add(KindEvent, "0", "1", "message_start", []byte(`{"type":"message_start"}`))
	f.Add(KindBody, "3", "2", "", []byte(`{"id":"chatcmpl-1","choices":[]}`))
	f.Add(KindFinal, "7", "1", "", []byte(`{"job_id":"job_1","status":"succeeded","status_code":200,"cost_usd":0.1,"parts":7}`))
	f.Add("final ", "+1", "-1", "ping", []byte(nil))
	f.Add("", "", "", "", []byte{})
	f.Add(KindEvent, "99999999999999999999", "0x10", "\x00", []byte("\xff"))
	f.Fuzz(func(t *testing.T, kind, seq, attempt, event string, data []byte) {
		if kind == "" {
			return // no kind header: not a header-based message, but a replyV1 one (FuzzReplyWire)
		}
		m := &nats.Msg{Subject: "sluice.reply.x.y", Data: data, Header: nats.Header{}}
		m.Header.Set(hdrKind, kind)
		m.Header.Set(hdrSeq, seq)
		m.Header.Set(hdrAttempt, attempt)
		m.Header.Set(hdrEvent, event)
		rep, err := ParseReply(m)
		wantSeq, err1 := strconv.Atoi(seq)
		wantAtt, err2 := strconv.Atoi(attempt)
		valid := err1 == nil && err2 == nil && (kind == KindEvent || kind == KindBody ||
			kind == KindFinal && json.Unmarshal(data, new(Final)) == nil)
		if err != nil {
			if valid {
				t.Fatalf("ParseReply refused kind %q seq %q attempt %q: %v", kind, seq, attempt, err)
			}
			return
		}
		if !valid {
			t.Fatalf("ParseReply accepted kind %q seq %q attempt %q", kind, seq, attempt)
		}
		want := Reply{Kind: kind, Seq: wantSeq, Attempt: wantAtt, Event: event, Data: data}
		if kind == KindFinal {
			var f Final
			if json.Unmarshal(data, &f) != nil {
				t.Fatalf("ParseReply accepted a final that is not JSON: %q", data)
			}
			want.Final, want.Data = &f, nil
		}
		if !reflect.DeepEqual(want, rep) {
			t.Fatalf("ParseReply = %+v, want %+v", rep, want)
		}
	})
}

// FuzzReplyWire: what a replier sends parses back to the same reply, and ParseReply never
// panics on any payload.
func FuzzReplyWire(f *testing.F) {
	f.Add(uint8(0), uint16(0), uint16(1), "message_start", []byte(`{"type":"message_start"}`), false, "", int64(0))
	f.Add(uint8(1), uint16(3), uint16(2), "", []byte(`{"id":"chatcmpl-1"}`), false, "", int64(0))
	f.Add(uint8(2), uint16(7), uint16(1), "", []byte(`{"choices":[]}`), true, "", int64(31))
	f.Add(uint8(2), uint16(0), uint16(4), "", []byte(nil), false, "upstream failed: \"429\"\n", int64(-1))
	f.Add(uint8(0), uint16(2), uint16(1), "ping", []byte("\x01\x03\x00"), true, "", int64(0))
	f.Fuzz(func(t *testing.T, kindN uint8, seq, attempt uint16, event string, data []byte, more bool, errMsg string,
		ntok int64,
	) {
		m := &nats.Msg{Subject: "r", Data: data}
		_, _ = ParseReply(m) // any payload: no panic
		kind := []string{KindEvent, KindBody, KindFinal}[kindN%3]
		r := &Replier{subject: "r", attempt: uint64(attempt), seq: int(seq), maxPart: 1 << 20}
		var payload []byte
		want := Reply{Kind: kind, Seq: int(seq), Attempt: int(attempt), Data: data}
		if len(data) == 0 {
			want.Data = nil
		}
		switch kind {
		case KindFinal:
			fin := &Final{JobID: "job_1", Status: "failed", StatusCode: 502, CostUSD: 0.25, Parts: int(seq)}
			if ntok != 0 {
				fin.Usage = &tokens.Usage{PromptTokens: ntok, CompletionTokens: -ntok}
			}
			if errMsg != "" {
				fin.Error = &APIError{Status: 502, Message: errMsg, Type: "upstream_error", Code: "x", RetryAfter: 3}
			}
			enc := appendFinal(nil, fin)
			payload = append(r.frame(kind, "", false, 0), binary.AppendUvarint(nil, uint64(len(enc)))...)
			payload = append(append(payload, enc...), data...)
			want.Final = fin
		default:
			if kind == KindEvent {
				want.Event, want.More = event, more
			} else {
				more, event = false, ""
			}
			payload = append(r.frame(kind, event, more, len(data)), data...)
		}
		got, err := ParseReply(&nats.Msg{Subject: "r", Data: payload})
		if err != nil {
			t.Fatalf("ParseReply refused what a replier sends: %v", err)
		}
		if !reflect.DeepEqual(want, got) {
			t.Fatalf("ParseReply = %+v, want %+v", got, want)
		}
	})
}
