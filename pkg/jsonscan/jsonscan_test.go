package jsonscan

import (
	"bytes"
	"encoding/json"
	"errors"
	"testing"
)

// collect returns Members' view of b as a map (last duplicate wins) and in order.
func collect(t *testing.T, b []byte) (map[string]json.RawMessage, []string, error) {
	t.Helper()
	m := map[string]json.RawMessage{}
	var order []string
	err := Members(b, func(k, v []byte) bool {
		m[string(k)] = append(json.RawMessage(nil), v...)
		order = append(order, string(k))
		return true
	})
	return m, order, err
}

func TestMembers(t *testing.T) {
	b := []byte(` { "model" : "gpt-4o" , "messages":[{"role":"user","content":"a \"}\" b ]"}],
		"stream":true,"n":-1.5e3,"x":null,"o":{"a":[1,{"b":"}"}]},"k\u00e9y":"v", "e":"", "esc\\":"\\"} `)
	m, order, err := collect(t, b)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"model":    `"gpt-4o"`,
		"messages": `[{"role":"user","content":"a \"}\" b ]"}]`,
		"stream":   `true`, "n": `-1.5e3`, "x": `null`, "o": `{"a":[1,{"b":"}"}]}`,
		"kéy": `"v"`, "e": `""`, `esc\`: `"\\"`,
	}
	if len(m) != len(want) || len(order) != len(want) {
		t.Fatalf("got %d members (%v), want %d", len(m), order, len(want))
	}
	for k, v := range want {
		if string(m[k]) != v {
			t.Errorf("%q = %s, want %s", k, m[k], v)
		}
	}
	if order[0] != "model" || order[len(order)-1] != `esc\` {
		t.Errorf("order %v", order)
	}
}

func TestMembersStopsEarly(t *testing.T) {
	n := 0
	err := Members([]byte(`{"a":1,"b":2,"c":3}`), func(k, v []byte) bool { n++; return string(k) != "b" })
	if err != nil || n != 2 {
		t.Fatalf("n=%d err=%v, want 2 calls and no error", n, err)
	}
}

func TestNotObject(t *testing.T) {
	for _, in := range []string{`[]`, `"x"`, `1`, `null`, ``, `   `} {
		if err := Object([]byte(in), func(k, v []byte) bool { return true }); err == nil {
			t.Errorf("%q: want an error", in)
		}
	}
	if err := Members([]byte(`[1]`), func(k, v []byte) bool { return true }); !errors.Is(err, ErrNotObject) {
		t.Errorf("[1]: got %v, want ErrNotObject", err)
	}
	if err := Object([]byte(`{}`), func(k, v []byte) bool { t.Error("called"); return true }); err != nil {
		t.Errorf("{}: %v", err)
	}
	if err := Object([]byte(`{"a":1,}`), func(k, v []byte) bool { return true }); err == nil {
		t.Error("trailing comma accepted")
	}
}

func TestMembersDoesNotAllocate(t *testing.T) {
	b := []byte(`{"id":"chatcmpl-1","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"hello"}}],"usage":{"prompt_tokens":3,"completion_tokens":1}}`)
	var usage []byte
	allocs := testing.AllocsPerRun(100, func() {
		_ = Members(b, func(k, v []byte) bool {
			if string(k) == "usage" {
				usage = v
			}
			return true
		})
	})
	if allocs != 0 {
		t.Errorf("%.1f allocations per scan, want 0", allocs)
	}
	if string(usage) != `{"prompt_tokens":3,"completion_tokens":1}` {
		t.Errorf("usage = %s", usage)
	}
}

// FuzzMembers checks Members against encoding/json on every valid object: the same members
// with the same values (last duplicate wins), and never a panic on anything.
func FuzzMembers(f *testing.F) {
	for _, s := range []string{`{}`, `{"a":1}`, `{"a":"\"","b":[{"c":"]"}],"a":2}`, `{"\u0061":true}`,
		` {"x" : { } , "y":[ ] } `, `[1,2]`, `{"a":}`, `{"a":"\\"}`, `{"a":1e5,"b":-0.5}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var ref map[string]json.RawMessage
		refErr := json.Unmarshal(b, &ref)
		got := map[string]json.RawMessage{}
		err := Object(b, func(k, v []byte) bool {
			got[string(k)] = append(json.RawMessage(nil), v...)
			return true
		})
		if refErr != nil || ref == nil { // invalid JSON, or valid but not an object
			if err == nil && ref == nil && refErr == nil {
				t.Fatalf("%q: accepted a non-object", b)
			}
			if refErr != nil && err == nil {
				t.Fatalf("%q: accepted what encoding/json rejects: %v", b, refErr)
			}
			return
		}
		if err != nil {
			t.Fatalf("%q: %v", b, err)
		}
		if len(got) != len(ref) {
			t.Fatalf("%q: %d members, encoding/json has %d", b, len(got), len(ref))
		}
		for k, v := range ref {
			if !bytes.Equal(bytes.TrimSpace(v), got[k]) {
				t.Fatalf("%q: member %q = %s, encoding/json has %s", b, k, got[k], v)
			}
		}
	})
}

func TestElements(t *testing.T) {
	var got []string
	err := Elements([]byte(` [ {"a":"]"} , 1,"x", [2,[3]] ,null] `), func(v []byte) bool {
		got = append(got, string(v))
		return true
	})
	want := []string{`{"a":"]"}`, `1`, `"x"`, `[2,[3]]`, `null`}
	if err != nil || len(got) != len(want) {
		t.Fatalf("got %q, %v; want %q", got, err, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("element %d = %s, want %s", i, got[i], want[i])
		}
	}
	n := 0
	if err := Elements([]byte(`[]`), func([]byte) bool { n++; return true }); err != nil || n != 0 {
		t.Errorf("[]: %d calls, %v", n, err)
	}
	if err := Elements([]byte(`{}`), func([]byte) bool { return true }); !errors.Is(err, ErrNotArray) {
		t.Errorf("{}: %v, want ErrNotArray", err)
	}
}

// FuzzElements checks Elements against encoding/json on every valid array.
func FuzzElements(f *testing.F) {
	for _, s := range []string{`[]`, `[1]`, `[{"a":[1,"]"]},"\"",null]`, `[ 1 , 2 ]`, `{}`, `[1,]`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if !json.Valid(b) {
			return // Elements expects valid JSON
		}
		var ref []json.RawMessage
		refErr := json.Unmarshal(b, &ref)
		var got [][]byte
		err := Elements(b, func(v []byte) bool { got = append(got, v); return true })
		if refErr != nil || ref == nil {
			if err == nil {
				t.Fatalf("%q: accepted a non-array", b)
			}
			return
		}
		if err != nil || len(got) != len(ref) {
			t.Fatalf("%q: %d elements (%v), encoding/json has %d", b, len(got), err, len(ref))
		}
		for i := range ref {
			if !bytes.Equal(bytes.TrimSpace(ref[i]), got[i]) {
				t.Fatalf("%q: element %d = %s, encoding/json has %s", b, i, got[i], ref[i])
			}
		}
	})
}
