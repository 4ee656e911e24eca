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
