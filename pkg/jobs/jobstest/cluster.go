package jobstest

import (
	"fmt"
	"net"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// Cluster is a JetStream cluster of embedded servers on loopback ports, in one process.
type Cluster struct {
	// Nodes are the servers; a stopped node's entry is replaced by Restart.
	Nodes []*Server
	// URL lists every node's client URL, comma-separated, as NATS_URL takes them.
	URL  string
	opts []*server.Options
}

// NewCluster starts n JetStream servers routed to each other (cluster "sluice") and waits
// until they have elected a meta leader that knows them all. Each node keeps its store in a
// temp dir of its own, kept across Restart. They are shut down when the test ends.
func NewCluster(tb testing.TB, n int) *Cluster {
	tb.Helper()
	client, routes := freePorts(tb, n), freePorts(tb, n)
	c := &Cluster{Nodes: make([]*Server, n)}
	urls := make([]string, n)
	for i := range n {
		urls[i] = fmt.Sprintf("nats://127.0.0.1:%d", client[i])
	}
	c.URL = strings.Join(urls, ",")
	for i := range n {
		o := &server.Options{ServerName: fmt.Sprintf("n%d", i+1), Host: "127.0.0.1", Port: client[i], JetStream: true,
			StoreDir: tb.TempDir(), NoLog: true, NoSigs: true, MaxPayload: 1 << 20,
			Cluster: server.ClusterOpts{Name: "sluice", Host: "127.0.0.1", Port: routes[i]}}
		for j := range n {
			if j != i {
				o.Routes = append(o.Routes, &url.URL{Scheme: "nats", Host: fmt.Sprintf("127.0.0.1:%d", routes[j])})
			}
		}
		c.opts = append(c.opts, o)
	}
	for i := range n {
		c.Nodes[i] = c.start(tb, i)
	}
	c.WaitReady(tb)
	return c
}

// freePorts returns n loopback ports that were free a moment ago.
func freePorts(tb testing.TB, n int) []int {
	tb.Helper()
	ports := make([]int, n)
	for i := range ports {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			tb.Fatal(err)
		}
		ports[i] = ln.Addr().(*net.TCPAddr).Port
		defer ln.Close()
	}
	return ports
}

func (c *Cluster) start(tb testing.TB, i int) *Server {
	tb.Helper()
	o := *c.opts[i]
	ns, err := server.NewServer(&o)
	if err != nil {
		tb.Fatalf("nats node %d: %v", i, err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(20 * time.Second) {
		tb.Fatalf("nats node %d not ready", i)
	}
	s := &Server{Server: ns, URL: ns.ClientURL(), dir: o.StoreDir, port: o.Port}
	tb.Cleanup(s.Stop)
	return s
}

// WaitReady waits until the running nodes have a JetStream meta leader and every running
// node is current with it.
func (c *Cluster) WaitReady(tb testing.TB) {
	tb.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		leader, current := false, true
		for _, s := range c.Nodes {
			if !s.Running() {
				continue
			}
			leader = leader || s.JetStreamIsLeader()
			current = current && s.JetStreamIsCurrent()
		}
		if leader && current {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatal("nats cluster: no JetStream meta leader after 60s")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// StreamLeader is the index of the node leading stream (in the global account), or -1.
func (c *Cluster) StreamLeader(stream string) int {
	for i, s := range c.Nodes {
		if s.Running() && s.JetStreamIsStreamLeader(server.DEFAULT_GLOBAL_ACCOUNT, stream) {
			return i
		}
	}
	return -1
}

// Restart starts node i again on its ports and store (after Stop); it rejoins the cluster
// and catches up its streams.
func (c *Cluster) Restart(tb testing.TB, i int) {
	tb.Helper()
	c.Nodes[i].Stop()
	c.Nodes[i] = c.start(tb, i)
}
