package batch

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"
)

// TestBatcherGroupsWaitingRequests: requests that wait while a write runs go together in
// the next write, and each caller gets its own output.
func TestBatcherGroupsWaitingRequests(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	var mu sync.Mutex
	var sizes []int
	write := func(_ context.Context, ins []int) ([]string, error) {
		mu.Lock()
		sizes = append(sizes, len(ins))
		first := len(sizes) == 1
		mu.Unlock()
		if first {
			<-release // hold the first write so the others queue up behind it
		}
		out := make([]string, len(ins))
		for i, n := range ins {
			out[i] = fmt.Sprint(n * 10)
		}
		return out, nil
	}
	b := New(write, Options{Max: 64})
	// A buffered hand-off (in this test only) lets the test see that the requests are
	// waiting, without guessing at timing.
	b.in = make(chan request[int, string], 16)
	ctx, cancel := context.WithCancel(context.Background())
	var run sync.WaitGroup
	run.Go(func() { b.Run(ctx) })
	defer func() { cancel(); run.Wait() }()

	firstDone := make(chan string, 1)
	go func() { out, _ := b.Do(context.Background(), 0); firstDone <- out }()
	waitFor(t, func() bool { mu.Lock(); defer mu.Unlock(); return len(sizes) == 1 })
	var callers sync.WaitGroup
	got := make([]string, 9)
	for i := 1; i <= 8; i++ {
		callers.Go(func() { got[i], _ = b.Do(context.Background(), i) })
	}
	waitFor(t, func() bool { return len(b.in) == 8 }) // all 8 wait behind the first write
	close(release)
	got[0] = <-firstDone
	callers.Wait()
	for i, g := range got {
		if g != fmt.Sprint(i*10) {
			t.Errorf("caller %d got %q, want %q", i, g, fmt.Sprint(i*10))
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(sizes) != 2 || sizes[0] != 1 || sizes[1] != 8 {
		t.Fatalf("write sizes %v: want [1 8], the first alone, then the 8 waiting ones together", sizes)
	}
}

// TestBatcherIsolatesABadRequest: one request the write refuses fails alone.
func TestBatcherIsolatesABadRequest(t *testing.T) {
	t.Parallel()
	errBad := errors.New("bad input")
	write := func(_ context.Context, ins []int) ([]int, error) {
		for _, n := range ins {
			if n < 0 {
				return nil, errBad
			}
		}
		return ins, nil
	}
	b := New(write, Options{})
	reqs := []int{1, -1, 2}
	var outs []int
	var errs []error
	// Hand the three to one flush directly, as Run would after collecting them.
	batch := make([]request[int, int], len(reqs))
	for i, n := range reqs {
		batch[i] = request[int, int]{in: n, done: make(chan result[int], 1)}
	}
	b.flush(batch, reqs)
	for _, r := range batch {
		res := <-r.done
		outs, errs = append(outs, res.out), append(errs, res.err)
	}
	if errs[0] != nil || errs[2] != nil || outs[0] != 1 || outs[2] != 2 {
		t.Errorf("good requests: outs %v errs %v, want 1 and 2 without error", outs, errs)
	}
	if !errors.Is(errs[1], errBad) {
		t.Errorf("bad request: err %v, want %v", errs[1], errBad)
	}
}

// TestBatcherDoGivesUpWithItsContext: with no writer running, Do returns ctx's error.
func TestBatcherDoGivesUpWithItsContext(t *testing.T) {
	t.Parallel()
	b := New(func(context.Context, []int) ([]int, error) { return nil, nil }, Options{})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := b.Do(ctx, 1); !errors.Is(err, context.Canceled) {
		t.Errorf("Do = %v, want context.Canceled", err)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached in 30s")
		}
		time.Sleep(time.Millisecond)
	}
}
