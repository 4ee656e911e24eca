package worker

import "sync"

// shares caps how many of the pool's slots the jobs of one API key may hold at once in this
// worker, so that one tenant's slow or hanging model cannot occupy every slot: a job over
// its key's share goes back to the queue for a while (deliver.go, endOverShare) and the slot
// serves another key's job.
type shares struct {
	limit int // slots one key may hold

	mu   sync.Mutex
	held map[string]int
}

func newShares(limit int) *shares {
	return &shares{limit: max(limit, 1), held: map[string]int{}}
}

// take counts one more slot for key. If the key is at its share, take takes nothing and
// returns ok false, unless force is set (the job must run now: it has no deliveries to
// spare). release gives the slot back.
func (s *shares) take(key string, force bool) (release func(), ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.held[key] >= s.limit && !force {
		return nil, false
	}
	s.held[key]++
	return func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.held[key]--; s.held[key] <= 0 {
			delete(s.held, key)
		}
	}, true
}
