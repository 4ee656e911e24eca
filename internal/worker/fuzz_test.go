package worker

import (
	"encoding/json"
	"testing"
)

// FuzzSetModel: setModel never panics, and on any JSON object it returns an object whose
// "model" is the upstream's name and whose other members are unchanged.
func FuzzSetModel(f *testing.F) {
	for _, s := range []string{`{"model":"a","messages":[]}`, `{}`, `null`, `[]`, `{"model":1}`, `{"model":"up"}`,
		`{"a":{"model":"x"},"model":"y"}`, `"str"`, `{`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		out, err := setModel(body, "up")
		if err != nil {
			return
		}
		var before, after map[string]json.RawMessage
		if json.Unmarshal(body, &before) != nil || json.Unmarshal(out, &after) != nil {
			t.Fatalf("setModel(%q) = %q: want both objects", body, out)
		}
		var m string
		if json.Unmarshal(after["model"], &m) != nil || m != "up" {
			t.Fatalf("setModel(%q) = %q: model is not \"up\"", body, out)
		}
		if len(before) != len(after) && len(before)+1 != len(after) {
			t.Fatalf("setModel(%q) = %q: members changed", body, out)
		}
	})
}
