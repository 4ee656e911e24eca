// Package secret holds the Secret type: a string that never prints itself, so an API key
// cannot reach a log line, an error message or a %v by accident.
package secret

import (
	"fmt"
	"log/slog"
	"strings"
)

// Secret is a credential. String, GoString, Format via %v and LogValue all print "[redacted]";
// call Reveal where the real value is needed (an Authorization header).
type Secret string

const redacted = "[redacted]"

// Reveal returns the secret's value.
func (s Secret) Reveal() string { return string(s) }

// String returns "[redacted]".
func (s Secret) String() string { return redacted }

// GoString returns "[redacted]".
func (s Secret) GoString() string { return redacted }

// LogValue returns "[redacted]" for slog.
func (s Secret) LogValue() slog.Value { return slog.StringValue(redacted) }

// MarshalText returns "[redacted]", so encoding a struct that holds a Secret leaks nothing.
func (s Secret) MarshalText() ([]byte, error) { return []byte(redacted), nil }

// Hint returns a masked form for display: the first three and last four characters.
func (s Secret) Hint() string {
	v := string(s)
	if len(v) <= 8 {
		return "…"
	}
	return v[:3] + "…" + v[len(v)-4:]
}

// List is a comma-separated list of secrets, such as SLUICE_ENCRYPTION_KEYS_OLD. Like
// Secret, it never prints its values: String, GoString, LogValue and MarshalText say how
// many there are and nothing else.
type List []Secret

// UnmarshalText splits text on commas, trimming spaces around each item and dropping empty
// ones, so "a, b," is two secrets and "" is none. It never fails.
func (l *List) UnmarshalText(text []byte) error {
	var out List
	for item := range strings.SplitSeq(string(text), ",") {
		if item = strings.TrimSpace(item); item != "" {
			out = append(out, Secret(item))
		}
	}
	*l = out
	return nil
}

// Reveal returns the secrets' values.
func (l List) Reveal() []string {
	out := make([]string, len(l))
	for i, s := range l {
		out[i] = string(s)
	}
	return out
}

// String returns "[redacted ×N]".
func (l List) String() string { return fmt.Sprintf("[redacted ×%d]", len(l)) }

// GoString returns the same as String.
func (l List) GoString() string { return l.String() }

// LogValue returns the same as String, for slog.
func (l List) LogValue() slog.Value { return slog.StringValue(l.String()) }

// MarshalText returns the same as String, so encoding a struct that holds a List leaks nothing.
func (l List) MarshalText() ([]byte, error) { return []byte(l.String()), nil }
