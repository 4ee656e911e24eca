// Package secret holds the Secret type: a string that never prints itself, so an API key
// cannot reach a log line, an error message or a %v by accident.
package secret

import "log/slog"

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
