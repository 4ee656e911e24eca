package main

import (
	"math"
	"math/bits"
	"time"
)

// hist is a log-linear latency histogram in the manner of HDR histograms: values below
// 2^subBits ns are exact, larger ones fall in one of 2^(subBits-1) buckets per power of two,
// so a reported quantile is within 1/2^subBits (under 1%) of the true one. Recording is a
// few integer operations and never allocates; a hist is not safe for concurrent use, so each
// load goroutine owns one and they are merged at the end.
type hist struct {
	counts [histBuckets]uint64
	n      uint64
	sum    time.Duration
	min    time.Duration
	max    time.Duration
}

const (
	subBits  = 7
	subCount = 1 << subBits       // exact values below this (ns)
	subHalf  = 1 << (subBits - 1) // buckets per power of two above it
	// maxShift covers values up to 2^(maxShift+subBits) ns, about 2.4 hours; longer ones
	// land in the last bucket.
	maxShift    = 36
	histBuckets = subCount + maxShift*subHalf
)

func bucketOf(v time.Duration) int {
	if v < 0 {
		v = 0
	}
	u := uint64(v)
	if u < subCount {
		return int(u)
	}
	shift := bits.Len64(u) - subBits // ≥ 1: the top subBits bits of u are u>>shift
	if shift > maxShift {
		return histBuckets - 1
	}
	m := int(u >> uint(shift)) // in [subHalf, subCount)
	return subCount + (shift-1)*subHalf + (m - subHalf)
}

// bucketMid is the middle of bucket i's range.
func bucketMid(i int) time.Duration {
	if i < subCount {
		return time.Duration(i)
	}
	j := i - subCount
	shift := j/subHalf + 1
	lower := uint64(subHalf+j%subHalf) << uint(shift)
	return time.Duration(lower + (uint64(1)<<uint(shift))/2)
}

func (h *hist) record(d time.Duration) {
	h.counts[bucketOf(d)]++
	if h.n == 0 || d < h.min {
		h.min = d
	}
	if d > h.max {
		h.max = d
	}
	h.n++
	h.sum += d
}

// merge adds o's samples to h.
func (h *hist) merge(o *hist) {
	if o.n == 0 {
		return
	}
	for i, c := range o.counts {
		h.counts[i] += c
	}
	if h.n == 0 || o.min < h.min {
		h.min = o.min
	}
	h.max = max(h.max, o.max)
	h.n += o.n
	h.sum += o.sum
}

// quantile returns the q-quantile (0 ≤ q ≤ 1), or 0 if h is empty.
func (h *hist) quantile(q float64) time.Duration {
	if h.n == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(h.n)))
	rank = min(max(rank, 1), h.n)
	var seen uint64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			return min(max(bucketMid(i), h.min), h.max)
		}
	}
	return h.max
}

func (h *hist) mean() time.Duration {
	if h.n == 0 {
		return 0
	}
	return h.sum / time.Duration(h.n)
}

// summary is what the report keeps of a histogram.
type summary struct {
	N    uint64  `json:"n"`
	Mean float64 `json:"mean_ms"`
	P50  float64 `json:"p50_ms"`
	P90  float64 `json:"p90_ms"`
	P99  float64 `json:"p99_ms"`
	Max  float64 `json:"max_ms"`
}

func (h *hist) summary() summary {
	return summary{N: h.n, Mean: ms(h.mean()), P50: ms(h.quantile(0.5)), P90: ms(h.quantile(0.9)),
		P99: ms(h.quantile(0.99)), Max: ms(h.max)}
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
