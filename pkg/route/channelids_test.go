package route

import (
	"slices"
	"testing"
)

// TestChannelIDs_Issue14_1: every routed channel once, sorted; a removed one no more.
func TestChannelIDs_Issue14_1(t *testing.T) {
	t.Parallel()
	r, _ := newTestRouter(t, ch("b", 0, 1, "m", "n"), ch("a", 0, 1, "m"), ch("c", 0, 1, "n"))
	if got := r.ChannelIDs(); !slices.Equal(got, []string{"a", "b", "c"}) {
		t.Errorf("ChannelIDs() = %v, want [a b c]", got)
	}
	r.Remove("b")
	if got := r.ChannelIDs(); !slices.Equal(got, []string{"a", "c"}) {
		t.Errorf("after Remove(b): ChannelIDs() = %v, want [a c]", got)
	}
}
