package ingress

import (
	"net"
	"net/netip"
	"sync"
)

// LimitPerIP returns a listener that lets each client address hold at most n connections
// open at once: a connection over that is closed as soon as it is accepted, before
// anything is read from it, and refused (if not nil) is called. IPv4 addresses count one
// by one; IPv6 addresses by their /64, which one host commonly has whole. A connection's
// place is given back when it is closed, once however often Close is called. Connections
// with no IP address (not TCP) are not counted.
//
// Behind a proxy or load balancer every connection comes from its few addresses: there, set
// n above its connection pool or turn the cap off (INGRESS_MAX_CONNS_PER_IP=0), and cap
// clients at the proxy.
func LimitPerIP(l net.Listener, n int, refused func()) net.Listener {
	return &perIPListener{Listener: l, n: n, refused: refused, open: map[netip.Prefix]int{}}
}

type perIPListener struct {
	net.Listener
	n       int
	refused func()
	mu      sync.Mutex
	open    map[netip.Prefix]int // connections open per client address; no zero entries
}

// Accept returns the next connection whose address is under its cap, closing those over it.
func (l *perIPListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		k, ok := clientPrefix(c.RemoteAddr())
		if !ok {
			return c, nil
		}
		if l.take(k) {
			return &perIPConn{Conn: c, release: func() { l.give(k) }}, nil
		}
		// Counted before the close, so whoever sees the close can already read the count.
		if l.refused != nil {
			l.refused()
		}
		_ = c.Close()
	}
}

func (l *perIPListener) take(k netip.Prefix) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.open[k] >= l.n {
		return false
	}
	l.open[k]++
	return true
}

func (l *perIPListener) give(k netip.Prefix) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.open[k]--; l.open[k] <= 0 {
		delete(l.open, k)
	}
}

// count returns how many connections from k are open.
func (l *perIPListener) count(k netip.Prefix) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.open[k]
}

// clientPrefix is what a connection from a counts against: its IPv4 address (an
// IPv4-mapped IPv6 one taken as IPv4), or its IPv6 /64.
func clientPrefix(a net.Addr) (netip.Prefix, bool) {
	tcp, ok := a.(*net.TCPAddr)
	if !ok {
		return netip.Prefix{}, false
	}
	ip := tcp.AddrPort().Addr().Unmap().WithZone("")
	bits := 64
	if ip.Is4() {
		bits = 32
	}
	p, err := ip.Prefix(bits)
	return p, err == nil && p.IsValid()
}

type perIPConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *perIPConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}
