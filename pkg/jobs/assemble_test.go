package jobs

import (
	"strings"
	"testing"
)

// msgs builds reply messages of one attempt, numbered from 0.
func ev(attempt, seq int, data string) Reply {
	return Reply{Kind: KindEvent, Attempt: attempt, Seq: seq, Data: []byte(data)}
}

func part(attempt, seq int, data string) Reply {
	r := ev(attempt, seq, data)
	r.More = true
	return r
}

func body(attempt, seq int, data string) Reply {
	return Reply{Kind: KindBody, Attempt: attempt, Seq: seq, Data: []byte(data)}
}

func final(attempt, seq, parts int, data string) Reply {
	r := Reply{Kind: KindFinal, Attempt: attempt, Seq: seq, Final: &Final{Status: "succeeded", StatusCode: 200, Parts: parts}}
	if data != "" {
		r.Data = []byte(data)
	}
	return r
}

// run feeds msgs to a new Assembler and describes the steps: each event's data, then
// "done" (with the body, and "gap" when the stored result must be read) or "broken:<code>".
func run(stream bool, msgs ...Reply) []string {
	a := NewAssembler(stream)
	var out []string
	for _, m := range msgs {
		st := a.Add(m)
		switch st.Kind {
		case StepEvent:
			out = append(out, "event:"+string(st.Data))
		case StepDone:
			d := "done:" + string(st.Body)
			if st.Gap {
				d += ":gap"
			}
			return append(out, d)
		case StepBroken:
			return append(out, "broken:"+st.Err.Code)
		}
	}
	return out
}

func TestAssembler(t *testing.T) {
	t.Parallel()
	big := strings.Repeat("x", 100)
	tests := []struct {
		name   string
		stream bool
		msgs   []Reply
		want   []string
	}{
		{"whole answer with its final", false, []Reply{final(1, 0, 0, `{"ok":1}`)}, []string{"done:{\"ok\":1}"}},
		{"whole answer in slices", false, []Reply{body(1, 0, `{"a":`), body(1, 1, `1}`), final(1, 2, 2, "")},
			[]string{`done:{"a":1}`}},
		{"lost slice: read the stored result", false, []Reply{body(1, 0, `{"a":`), final(1, 2, 2, "")},
			[]string{`done:{"a"::gap`}},
		{"final counts more parts than arrived", false, []Reply{body(1, 0, "a"), final(1, 1, 2, "")},
			[]string{"done:a:gap"}},
		{"duplicate slice ignored", false, []Reply{body(1, 0, "a"), body(1, 0, "a"), body(1, 1, "b"), final(1, 2, 2, "")},
			[]string{"done:ab"}},
		{"stale attempt ignored", false, []Reply{body(2, 0, "new"), body(1, 0, "old"), final(2, 1, 1, "")},
			[]string{"done:new"}},
		{"redelivery starts a whole answer over", false, []Reply{body(1, 0, "half"), final(2, 0, 0, "whole")},
			[]string{"done:whole"}},
		{"redelivery drops the earlier gap", false, []Reply{body(1, 1, "x"), final(2, 0, 0, "whole")},
			[]string{"done:whole"}},
		{"stream events in order", true, []Reply{ev(1, 0, "a"), ev(1, 1, "b"), final(1, 2, 2, "")},
			[]string{"event:a", "event:b", "done:"}},
		{"stream duplicate event ignored", true, []Reply{ev(1, 0, "a"), ev(1, 0, "a"), ev(1, 1, "b"), final(1, 2, 2, "")},
			[]string{"event:a", "event:b", "done:"}},
		{"stream gap breaks it", true, []Reply{ev(1, 0, "a"), ev(1, 2, "c")}, []string{"event:a", "broken:stream_gap"}},
		{"stream gap before any event breaks it", true, []Reply{ev(1, 1, "b")}, []string{"broken:stream_gap"}},
		{"reordered events break it", true, []Reply{ev(1, 1, "b"), ev(1, 0, "a")}, []string{"broken:stream_gap"}},
		{"stream redelivered mid-way is interrupted", true, []Reply{ev(1, 0, "a"), ev(2, 0, "a")},
			[]string{"event:a", "broken:stream_interrupted"}},
		{"stream redelivered before any event starts over", true, []Reply{final(2, 0, 0, "")}, []string{"done:"}},
		{"stream stale attempt ignored", true, []Reply{ev(2, 0, "a"), ev(1, 1, "z"), final(2, 1, 1, "")},
			[]string{"event:a", "done:"}},
		{"event split in parts is joined", true, []Reply{part(1, 0, big[:40]), part(1, 1, big[40:80]), ev(1, 2, big[80:]),
			ev(1, 3, "next"), final(1, 4, 4, "")}, []string{"event:" + big, "event:next", "done:"}},
		{"lost part of a split event breaks the stream", true, []Reply{part(1, 0, "ab"), ev(1, 2, "cd")},
			[]string{"broken:stream_gap"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := run(tt.stream, tt.msgs...)
			if strings.Join(got, "|") != strings.Join(tt.want, "|") {
				t.Errorf("steps = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestAssemblerDropped(t *testing.T) {
	t.Parallel()
	a := NewAssembler(true)
	if st := a.Dropped(); st.Kind != StepBroken || st.Err.Code != "stream_gap" {
		t.Errorf("stream: Dropped() = %+v, want broken with stream_gap", st)
	}
	a = NewAssembler(false)
	if st := a.Dropped(); st.Kind != StepNone {
		t.Errorf("whole answer: Dropped() = %+v, want nothing yet", st)
	}
	if st := a.Add(final(1, 0, 0, "x")); st.Kind != StepDone || !st.Gap {
		t.Errorf("whole answer after a drop: %+v, want done with Gap (read the stored result)", st)
	}
}

func TestAssemblerStartedOnlyAfterAnEvent(t *testing.T) {
	t.Parallel()
	a := NewAssembler(true)
	a.Add(part(1, 0, "half"))
	if a.Started() {
		t.Fatal("Started() after half an event, want false: nothing was handed on")
	}
	a.Add(ev(1, 1, "rest"))
	if !a.Started() {
		t.Fatal("Started() after a whole event, want true")
	}
}
