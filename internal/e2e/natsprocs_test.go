package e2e

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// natsProcs is a JetStream cluster of real nats-server processes on loopback (the version
// go.mod pins), so that a node can be killed the way a machine dies: SIGKILL, no shutdown,
// no goodbye to its peers or clients, its file store left as the kill found it.
type natsProcs struct {
	// url lists every node's client URL, comma-separated, as NATS_URL takes them.
	url   string
	nodes []*natsNode
}

type natsNode struct {
	name, client, route, mon, dir string
	args                          []string
	p                             *proc // nil while the node is down
}

// startNATSProcs starts n routed JetStream nodes (cluster "sluice", names n1…nn), each with
// its own store directory (kept across a kill), and waits until all are healthy.
func startNATSProcs(t *testing.T, n int) *natsProcs {
	t.Helper()
	c := &natsProcs{nodes: make([]*natsNode, n)}
	var routes, urls []string
	for i := range c.nodes {
		nd := &natsNode{name: fmt.Sprintf("n%d", i+1), client: freeAddr(t), route: freeAddr(t), mon: freeAddr(t),
			dir: filepath.Join(t.TempDir(), "js")}
		c.nodes[i] = nd
		routes = append(routes, "nats://"+nd.route)
		urls = append(urls, "nats://"+nd.client)
	}
	port := func(addr string) string { return addr[strings.LastIndexByte(addr, ':')+1:] }
	for _, nd := range c.nodes {
		nd.args = []string{"-a", "127.0.0.1", "-p", port(nd.client), "-n", nd.name, "-js", "-sd", nd.dir,
			"-m", port(nd.mon), "--cluster_name", "sluice", "--cluster", "nats://" + nd.route,
			"--routes", strings.Join(routes, ",")}
	}
	c.url = strings.Join(urls, ",")
	// Start them together: a node's /healthz answers 200 only once JetStream has a meta
	// leader, which needs a quorum of its peers up.
	for i := range c.nodes {
		c.launch(t, i)
	}
	c.waitReady(t)
	return c
}

// launch starts node i's process without waiting for it.
func (c *natsProcs) launch(t *testing.T, i int) {
	t.Helper()
	nd := c.nodes[i]
	// "/varz" answers as soon as the process serves; waitReady checks JetStream's health.
	nd.p = startProcReady(t, "nats-server", nd.client, "http://"+nd.mon+"/varz", nil, nd.args...)
}

// waitReady waits until every running node's /healthz answers 200: JetStream is up, in the
// cluster, and current with its meta leader.
func (c *natsProcs) waitReady(t *testing.T) {
	t.Helper()
	for _, nd := range c.nodes {
		if nd.p != nil {
			eventually(t, 60*time.Second, "nats node "+nd.name+" healthy", func() bool { return getOK("http://" + nd.mon + "/healthz") })
		}
	}
}

// kill SIGKILLs node i and waits for the process to be gone.
func (c *natsProcs) kill(i int) {
	c.nodes[i].p.signal(syscall.SIGKILL)
	c.nodes[i].p = nil
}

// restart starts killed node i again on its ports and store; it rejoins the cluster and
// catches its streams up.
func (c *natsProcs) restart(t *testing.T, i int) {
	t.Helper()
	c.launch(t, i)
	c.waitReady(t)
}

// streamLeader asks the cluster which node leads stream: its index, or -1 while there is
// no leader (or no node answers).
func (c *natsProcs) streamLeader(t *testing.T, stream string) int {
	t.Helper()
	nc, err := nats.Connect(c.url, nats.Timeout(2*time.Second))
	if err != nil {
		return -1
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return -1
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, stream)
	if err != nil {
		return -1
	}
	info := s.CachedInfo()
	if info.Cluster == nil {
		return -1
	}
	for i, nd := range c.nodes {
		if nd.name == info.Cluster.Leader && nd.p != nil {
			return i
		}
	}
	return -1
}
