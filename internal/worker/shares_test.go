package worker

import "testing"

// TestKeyShare_Issue9_0: one key holds at most its share of the slots; another key is not
// affected; a forced take (a job with no deliveries to spare) goes over; releases free places.
func TestKeyShare_Issue9_0(t *testing.T) {
	t.Parallel()
	s := newShares(2)
	r1, ok1 := s.take("key_a", false)
	r2, ok2 := s.take("key_a", false)
	if !ok1 || !ok2 {
		t.Fatal("take refused a key below its share")
	}
	if _, ok := s.take("key_a", false); ok {
		t.Fatal("a key took a third slot with a share of 2")
	}
	rb, ok := s.take("key_b", false)
	if !ok {
		t.Fatal("another key was refused because key_a is at its share")
	}
	rf, ok := s.take("key_a", true)
	if !ok {
		t.Fatal("a forced take was refused")
	}
	rf()
	r1()
	if _, ok := s.take("key_a", false); !ok {
		t.Error("take refused a slot freed by a release")
	}
	r2()
	rb()
}
