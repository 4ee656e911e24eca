package secret_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/sluicehq/sluice/pkg/secret"
)

func TestListUnmarshalText_Issue9_19(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in   string
		want []string
	}{
		{"", []string{}},
		{"a", []string{"a"}},
		{"a,b", []string{"a", "b"}},
		{" a , b ,", []string{"a", "b"}},
		{",,", []string{}},
	}
	for _, tt := range tests {
		var l secret.List
		if err := l.UnmarshalText([]byte(tt.in)); err != nil {
			t.Fatalf("UnmarshalText(%q): %v", tt.in, err)
		}
		if diff := cmp.Diff(tt.want, l.Reveal()); diff != "" {
			t.Errorf("UnmarshalText(%q) (-want +got):\n%s", tt.in, diff)
		}
	}
}

func TestListNeverPrintsItsValues_Issue9_19(t *testing.T) {
	t.Parallel()
	const v1, v2 = "key-one-AAAA", "key-two-BBBB"
	l := secret.List{v1, v2}
	var logged bytes.Buffer
	slog.New(slog.NewTextHandler(&logged, nil)).Info("cfg", "keys", l)
	j, err := json.Marshal(struct{ Keys secret.List }{l})
	if err != nil {
		t.Fatal(err)
	}
	for _, out := range []string{fmt.Sprint(l), fmt.Sprintf("%v %+v %#v %s %q", l, l, l, l, l), logged.String(), string(j)} {
		if strings.Contains(out, v1) || strings.Contains(out, v2) {
			t.Errorf("output %q holds a secret", out)
		}
		if !strings.Contains(out, "redacted") {
			t.Errorf("output %q does not say the value is redacted", out)
		}
	}
}
