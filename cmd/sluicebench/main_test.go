package main

import (
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestHistQuantiles(t *testing.T) {
	t.Parallel()
	var h hist
	var all []time.Duration
	r := rand.New(rand.NewPCG(1, 2))
	for range 100_000 {
		d := time.Duration(r.ExpFloat64() * float64(2*time.Millisecond))
		h.record(d)
		all = append(all, d)
	}
	slices.Sort(all)
	for _, q := range []float64{0.5, 0.9, 0.99, 0.999} {
		want := all[int(q*float64(len(all)))-1]
		got := h.quantile(q)
		if diff := float64(got-want) / float64(want); diff > 0.01 || diff < -0.01 {
			t.Errorf("quantile(%v) = %v, want %v ±1%%", q, got, want)
		}
	}
	if h.min != all[0] || h.max != all[len(all)-1] || h.n != uint64(len(all)) {
		t.Errorf("min/max/n = %v/%v/%d, want %v/%v/%d", h.min, h.max, h.n, all[0], all[len(all)-1], len(all))
	}
}

func TestHistBucketsAreMonotonic(t *testing.T) {
	t.Parallel()
	prev := -1
	for v := time.Duration(0); v < 10*time.Second; v = v*11/10 + 1 {
		b := bucketOf(v)
		if b < prev || b >= histBuckets {
			t.Fatalf("bucketOf(%v) = %d after %d", v, b, prev)
		}
		if mid := bucketMid(b); float64(mid-v) > 0.01*float64(v)+1 || float64(v-mid) > 0.01*float64(v)+1 {
			t.Fatalf("bucketMid(bucketOf(%v)) = %v, more than 1%% off", v, mid)
		}
		prev = b
	}
	if b := bucketOf(100 * time.Hour); b != histBuckets-1 {
		t.Errorf("bucketOf(100h) = %d, want the last bucket", b)
	}
}

func TestHistMerge(t *testing.T) {
	t.Parallel()
	var a, b, m hist
	a.record(time.Millisecond)
	b.record(3 * time.Millisecond)
	b.record(5 * time.Millisecond)
	m.merge(&a)
	m.merge(&b)
	m.merge(&hist{})
	if m.n != 3 || m.min != time.Millisecond || m.max != 5*time.Millisecond || m.mean() != 3*time.Millisecond {
		t.Errorf("merged n=%d min=%v max=%v mean=%v", m.n, m.min, m.max, m.mean())
	}
}

func TestParseMetrics(t *testing.T) {
	t.Parallel()
	text := `# HELP go_goroutines Number of goroutines that currently exist.
# TYPE go_goroutines gauge
go_goroutines 42
go_goroutines_other 7
process_resident_memory_bytes 2.3216128e+07
sluice_x{a="b"} 1
`
	v, found, err := parseMetrics(strings.NewReader(text), "go_goroutines", "process_resident_memory_bytes", "missing")
	if err != nil || v[0] != 42 || v[1] != 23216128 || !found[0] || !found[1] || found[2] {
		t.Fatalf("parseMetrics = %v, %v, %v", v, found, err)
	}
}

func TestParseProcStat(t *testing.T) {
	t.Parallel()
	// comm with a space and a parenthesis, utime 150 and stime 50 ticks.
	line := "1234 (my (proc) x) S 1 1234 1234 0 -1 4194304 100 0 0 0 150 50 0 0 20 0 8 0 12345 1000000 500\n"
	got, err := parseProcStat([]byte(line))
	if err != nil || got != 2*time.Second {
		t.Fatalf("parseProcStat = %v, %v; want 2s", got, err)
	}
}

func TestParseSystemStat(t *testing.T) {
	t.Parallel()
	busy, steal, total, err := parseSystemStat([]byte("cpu  100 0 50 800 50 0 0 20 0 0\ncpu0 1 2 3\n"))
	if err != nil || busy != 1500*time.Millisecond || steal != 200*time.Millisecond || total != 10200*time.Millisecond {
		t.Fatalf("parseSystemStat = %v, %v, %v, %v", busy, steal, total, err)
	}
}

func TestParseConfig(t *testing.T) {
	t.Parallel()
	c, err := parseConfig([]string{"-sections", "sync,slow", "-concurrency", "1, 8", "-duration", "3s"}, nil)
	if err != nil || !c.sections["sync"] || !c.sections["slow"] || c.sections["async"] ||
		!slices.Equal(c.concurrency, []int{1, 8}) || c.duration != 3*time.Second {
		t.Fatalf("parseConfig = %+v, %v", c, err)
	}
	_, err = parseConfig([]string{"-sections", "sync,bogus", "-concurrency", "0", "-slow-jobs", "0"}, nil)
	for _, want := range []string{"bogus", "-concurrency", "-slow-jobs"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v does not mention %s", err, want)
		}
	}
}
