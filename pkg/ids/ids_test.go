package ids_test

import (
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/pkg/ids"
)

func TestNewSortsByTime(t *testing.T) {
	t.Parallel()
	t0 := time.UnixMilli(1_764_140_000_000)
	a := ids.NewAt("job", t0)
	b := ids.NewAt("job", t0.Add(time.Millisecond))
	if !strings.HasPrefix(a, "job_") || len(a) != len("job_")+26 {
		t.Fatalf("NewAt = %q, want job_ + 26 characters", a)
	}
	if a >= b {
		t.Errorf("ids not ordered by time: %q >= %q", a, b)
	}
	if c := ids.NewAt("job", t0); c == a {
		t.Errorf("two ids at the same millisecond are equal: %q", c)
	}
}

func TestRandomLength(t *testing.T) {
	t.Parallel()
	if got := len(ids.Random(32)); got != 52 {
		t.Errorf("len(Random(32)) = %d, want 52", got)
	}
}

// TestIDsUnguessable_Issue9_5: a job id is shown to its client and names its cancel
// subject (sluice.cancel.<id>), so its 80 random bits must be random (crypto/rand), not a
// counter: ids made in the same millisecond share their time digits and nothing after.
func TestIDsUnguessable_Issue9_5(t *testing.T) {
	t.Parallel()
	t0 := time.Now()
	seen := map[string]bool{}
	prev := ""
	longest := 0
	for range 1000 {
		id := ids.NewAt("job", t0)
		tail := id[len(id)-16:] // the last 16 digits are 80 random bits
		if seen[tail] {
			t.Fatalf("random part %s repeats", tail)
		}
		seen[tail] = true
		n := 0
		for n < len(tail) && n < len(prev) && tail[n] == prev[n] {
			n++
		}
		longest, prev = max(longest, n), tail
	}
	// Random digits agree with chance 1/32 each: six leading ones in a row, about 1e-9 a pair.
	if longest > 5 {
		t.Errorf("ids of one millisecond share up to %d leading random digits: a sequence, not random", longest)
	}
}
