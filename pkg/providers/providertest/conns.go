package providertest

import (
	"net"
	"net/http"
	"sync"
)

// connCounter counts an http.Server's connections from its ConnState callbacks: those open
// now, those of them that have not carried a request yet, and all it has accepted.
type connCounter struct {
	mu    sync.Mutex
	used  map[net.Conn]bool // the open connections: whether each has carried a request
	total int64
}

// track records a connection's change of state. A connection is used from its first
// request on (StateActive); it stops counting when it is closed or hijacked.
func (c *connCounter) track(conn net.Conn, s http.ConnState) {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch s {
	case http.StateNew:
		if c.used == nil {
			c.used = make(map[net.Conn]bool)
		}
		c.used[conn] = false
		c.total++
	case http.StateActive:
		if _, open := c.used[conn]; open {
			c.used[conn] = true
		}
	case http.StateHijacked, http.StateClosed:
		delete(c.used, conn)
	}
}

// counts returns, in one snapshot, the connections open now, how many of those have not
// carried a request, and the connections accepted since the last resetTotal.
func (c *connCounter) counts() (open, unused, total int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, used := range c.used {
		if !used {
			unused++
		}
	}
	return int64(len(c.used)), unused, c.total
}

// resetTotal zeroes the count of accepted connections.
func (c *connCounter) resetTotal() {
	c.mu.Lock()
	c.total = 0
	c.mu.Unlock()
}
