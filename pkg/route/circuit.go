package route

// Circuit is the state of a channel's circuit breaker in one process.
type Circuit int

// The circuit states, numbered as the sluice_upstream_circuit_state gauge reports them.
const (
	// CircuitClosed: fewer than three retryable failures in a row; calls go through.
	CircuitClosed Circuit = 0
	// CircuitHalfOpen: the circuit opened and its pause is over; the next call is a trial,
	// whose success closes it and whose failure opens it again for twice as long.
	CircuitHalfOpen Circuit = 1
	// CircuitOpen: three or more failures in a row, and the pause is still running; the
	// channel is passed over.
	CircuitOpen Circuit = 2
)

// circuitAfter is how many retryable failures in a row open a channel's circuit.
const circuitAfter = 3

// String is the state's name: closed, half_open or open.
func (c Circuit) String() string {
	switch c {
	case CircuitHalfOpen:
		return "half_open"
	case CircuitOpen:
		return "open"
	default:
		return "closed"
	}
}

// Circuits returns the circuit state of every channel in this process's index (the enabled
// channels it routes to), by channel id. A Retry-After cool-down alone, or a Defer, leaves
// a circuit closed.
func (r *Router) Circuits() map[string]Circuit {
	r.mu.RLock()
	defer r.mu.RUnlock()
	now := r.now()
	out := map[string]Circuit{}
	for _, routes := range r.byModel {
		for _, rt := range routes {
			id := rt.Channel.ID
			if _, seen := out[id]; seen {
				continue
			}
			switch {
			case r.fails[id] < circuitAfter:
				out[id] = CircuitClosed
			case r.cool[id].After(now):
				out[id] = CircuitOpen
			default:
				out[id] = CircuitHalfOpen
			}
		}
	}
	return out
}
