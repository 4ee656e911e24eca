package worker

import (
	"testing"
	"time"
)

// TestDecide is the table of every delivery's fate: what happened → settle, Ack, Nak or Term.
func TestDecide(t *testing.T) {
	t.Parallel()
	p := deliveryPolicy{maxDeliver: 10}
	tests := []struct {
		name string
		s    situation
		want decision
	}{
		{"unreadable message", situation{end: endUnreadable, delivered: 1}, decision{act: actTerm, reason: "malformed job"}},
		{"unreadable metadata", situation{end: endUnreadable}, decision{act: actTerm, reason: "malformed job"}},
		{"postgres away, deliveries left", situation{end: endStoreFailed, delivered: 3},
			decision{act: actNak, delay: storeRetryDelay}},
		{"postgres away on the last delivery", situation{end: endStoreFailed, delivered: 10},
			decision{act: actTerm, reason: "cannot record job"}},
		{"postgres refused the write for good", situation{end: endStoreFailed, delivered: 1, permanent: true},
			decision{act: actTerm, reason: "cannot record job"}},
		{"shutdown before the caller saw anything", situation{end: endShutdown, delivered: 1},
			decision{act: actNak}},
		{"shutdown mid-stream", situation{end: endShutdown, delivered: 1, sent: 3}, decision{act: actSettle}},
		{"shutdown on the last delivery", situation{end: endShutdown, delivered: 10}, decision{act: actSettle}},
		{"ran: record first", situation{end: endRan, delivered: 1}, decision{act: actSettle}},
		{"recorded", situation{end: endRecorded, delivered: 1}, decision{act: actAck}},
		{"recorded on a redelivery", situation{end: endRecorded, delivered: 10}, decision{act: actAck}},
		{"over its key's share", situation{end: endOverShare, delivered: 1}, decision{act: actNak, delay: time.Second}},
		{"over its key's share again", situation{end: endOverShare, delivered: 6}, decision{act: actNak, delay: 6 * time.Second}},
		{"over its key's share, few deliveries left", situation{end: endOverShare, delivered: 7}, decision{act: actSettle}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := p.decide(tt.s); got != tt.want {
				t.Errorf("decide(%+v) = %+v, want %+v", tt.s, got, tt.want)
			}
		})
	}
}

// TestDecideFollowsMaxDeliver: the last delivery is the consumer's MaxDeliver, whatever it is.
func TestDecideFollowsMaxDeliver(t *testing.T) {
	t.Parallel()
	for _, maxDeliver := range []int{2, 5, 20} {
		p := deliveryPolicy{maxDeliver: maxDeliver}
		if d := p.decide(situation{end: endStoreFailed, delivered: maxDeliver - 1}); d.act != actNak || d.delay != time.Second {
			t.Errorf("maxDeliver %d, delivery %d: %+v, want a nak", maxDeliver, maxDeliver-1, d)
		}
		if d := p.decide(situation{end: endStoreFailed, delivered: maxDeliver}); d.act != actTerm {
			t.Errorf("maxDeliver %d, last delivery: %+v, want term", maxDeliver, d)
		}
	}
}
