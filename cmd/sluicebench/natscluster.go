package main

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// With -nats-cluster n (n > 1) the stack runs NATS as a JetStream cluster of n nats-server
// processes on loopback, built from the nats-server module this checkout depends on (the
// version cmd/devnats embeds), and the ingresses and workers get every client URL and
// QUEUE_REPLICAS=n. Their CPU is metered as "nats/1" … "nats/n", summed under "nats".

// buildNATSServer compiles nats-server into dir.
func buildNATSServer(ctx context.Context, goCmd, repo, dir string) (string, error) {
	out := filepath.Join(dir, "nats-server")
	cmd := exec.CommandContext(ctx, goCmd, "build", "-o", out, "github.com/nats-io/nats-server/v2")
	cmd.Dir = repo
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build nats-server: %w\n%s", err, b)
	}
	return out, nil
}

// startNATSCluster starts n servers, waits until each reports JetStream healthy, and sets
// s.nats (the first), s.natsPeers and s.natsURL.
func (s *stack) startNATSCluster(ctx context.Context, n int) error {
	bin, err := buildNATSServer(ctx, s.cfg.goCmd, s.cfg.repo, s.bin)
	if err != nil {
		return err
	}
	type node struct{ client, route, mon string }
	nodes := make([]node, n)
	var routes, urls []string
	for i := range nodes {
		for _, a := range []*string{&nodes[i].client, &nodes[i].route, &nodes[i].mon} {
			if *a, err = freeAddr(); err != nil {
				return err
			}
		}
		routes = append(routes, "nats://"+nodes[i].route)
		urls = append(urls, "nats://"+nodes[i].client)
	}
	port := func(addr string) string { return addr[strings.LastIndexByte(addr, ':')+1:] }
	for i, nd := range nodes {
		name := fmt.Sprintf("nats-%d", i+1)
		p, err := startProc(name, bin, s.dir, nil, "-a", "127.0.0.1", "-p", port(nd.client), "-n", name,
			"-js", "-sd", filepath.Join(s.dir, name), "-m", port(nd.mon), "--cluster_name", "sluicebench",
			"--cluster", "nats://"+nd.route, "--routes", strings.Join(routes, ","))
		if err != nil {
			return err
		}
		s.mu.Lock()
		if i == 0 {
			s.nats = p
		} else {
			s.natsPeers = append(s.natsPeers, p)
		}
		s.mu.Unlock()
	}
	for i, nd := range nodes {
		p := s.nats
		if i > 0 {
			p = s.natsPeers[i-1]
		}
		// /healthz answers 200 once the server's JetStream is up and in the cluster.
		if err := p.waitReady(ctx, 60*time.Second, probeHTTP(s.http, "http://"+nd.mon+"/healthz")); err != nil {
			return err
		}
	}
	s.natsURL = strings.Join(urls, ",")
	return nil
}
