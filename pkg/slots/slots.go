// Package slots counts the free places of a bounded pool, so that a loop pulling work asks
// for exactly as much as it can start: the worker's job pool and the webhook dispatcher both
// fetch only for free slots, which is what bounds their goroutines and memory.
package slots

import (
	"context"
	"time"
)

// Free holds one token per idle slot. The zero value is not usable; call New.
type Free chan struct{}

// New returns n free slots.
func New(n int) Free {
	f := make(Free, n)
	f.Put(n)
	return f
}

// Take blocks until a slot is free and takes it; it returns false once ctx is done.
func (f Free) Take(ctx context.Context) bool {
	select {
	case <-f:
		return true
	case <-ctx.Done():
		return false
	}
}

// TakeIdle takes every slot free right now, without blocking, and says how many.
func (f Free) TakeIdle() int {
	n := 0
	for {
		select {
		case <-f:
			n++
		default:
			return n
		}
	}
}

// Put gives n slots back. Giving back more than were taken blocks.
func (f Free) Put(n int) {
	for range n {
		f <- struct{}{}
	}
}

// Idle is how many slots are free now.
func (f Free) Idle() int { return len(f) }

// Sleep waits d or until ctx is done, whichever is first.
func Sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}
