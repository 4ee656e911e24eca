package route

import (
	"maps"
	"testing"
	"time"
)

// TestCircuits_Issue14_1: a channel's circuit reads closed until its third retryable failure
// in a row, open while the pause runs, half-open once it has run out (the next call is the
// trial), open again on the trial's failure and closed on a success; a Retry-After alone
// leaves it closed. Every routed channel is reported, once, whatever models it serves.
func TestCircuits_Issue14_1(t *testing.T) {
	t.Parallel()
	r, now := newTestRouter(t, ch("a", 0, 1, "m", "n"), ch("b", 0, 1, "m"))
	want := func(step string, a, b Circuit) {
		t.Helper()
		if got, w := r.Circuits(), map[string]Circuit{"a": a, "b": b}; !maps.Equal(got, w) {
			t.Errorf("%s: Circuits() = %v, want %v", step, got, w)
		}
	}
	want("at start", CircuitClosed, CircuitClosed)
	r.Failed("b", 30*time.Second) // a 429 with Retry-After: cooling, not a circuit
	r.Failed("a", 0)
	r.Failed("a", 0)
	want("two failures", CircuitClosed, CircuitClosed)
	r.Failed("a", 0)
	want("three failures", CircuitOpen, CircuitClosed)
	*now = now.Add(1500 * time.Millisecond) // past the first pause (1s)
	want("pause over", CircuitHalfOpen, CircuitClosed)
	r.Failed("a", 0) // the trial failed: open for 2s
	want("trial failed", CircuitOpen, CircuitClosed)
	*now = now.Add(1500 * time.Millisecond)
	want("1.5s into the 2s pause", CircuitOpen, CircuitClosed)
	*now = now.Add(time.Second)
	want("second pause over", CircuitHalfOpen, CircuitClosed)
	r.Succeeded("a")
	want("trial succeeded", CircuitClosed, CircuitClosed)
	r.Remove("b")
	if got := r.Circuits(); len(got) != 1 || got["a"] != CircuitClosed {
		t.Errorf("after removing b: Circuits() = %v, want only a, closed", got)
	}
	if CircuitOpen.String() != "open" || CircuitHalfOpen.String() != "half_open" || CircuitClosed.String() != "closed" {
		t.Errorf("names: %s %s %s", CircuitOpen, CircuitHalfOpen, CircuitClosed)
	}
}
