package main

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"time"
)

// The scale section runs the sync load against shapes of several ingress and worker
// processes sharing the stack's one NATS and one Postgres. The load generator spreads its
// clients over the ingresses (client i talks to ingress i mod n), as a load balancer would.

// scaleShape is one number of ingresses and workers and what its load points measured.
type scaleShape struct {
	Ingresses int          `json:"ingresses"`
	Workers   int          `json:"workers"`
	Points    []scalePoint `json:"points"`
	Error     string       `json:"error,omitempty"`
}

// scalePoint is one concurrency against a shape. CPU.Cores sums the processes of each role
// (every ingress under "ingress", every worker under "worker").
type scalePoint struct {
	Concurrency int        `json:"concurrency"`
	Result      loadResult `json:"sluice"`
	CPU         cpuShare   `json:"cpu"`
}

// fleet is the ingress and worker processes of one shape.
type fleet struct {
	ings, wrks []*proc
	ingAddrs   []string
}

func (f *fleet) stop() error {
	var errs []error
	for _, p := range f.wrks {
		errs = append(errs, p.stop(20*time.Second))
	}
	for _, p := range f.ings {
		errs = append(errs, p.stop(20*time.Second))
	}
	f.ings, f.wrks, f.ingAddrs = nil, nil, nil
	return errors.Join(errs...)
}

// pids names every process of the shape and the shared ones for the CPU meter; the names
// of a role's processes are "role/n", folded into "role" by foldRoles.
func (f *fleet) pids(s *stack) map[string]int {
	m := map[string]int{"nats": s.nats.pid(), "fakeupstream": s.fast.pid()}
	for i, p := range s.natsPeers {
		m[fmt.Sprintf("nats/%d", i+2)] = p.pid()
	}
	for i, p := range f.ings {
		m[fmt.Sprintf("ingress/%d", i+1)] = p.pid()
	}
	for i, p := range f.wrks {
		m[fmt.Sprintf("worker/%d", i+1)] = p.pid()
	}
	return m
}

// foldRoles sums "role/n" entries into "role" (cpuMeter.close does it for every meter).
func foldRoles(c cpuShare) cpuShare {
	out := map[string]float64{}
	for k, v := range c.Cores {
		role, _, _ := strings.Cut(k, "/")
		out[role] += v
	}
	c.Cores = out
	return c
}

// startFleet starts n ingresses and m workers, each with the settings startSluice gives the
// single ones (without pprof, whose fixed ports they would share).
func (s *stack) startFleet(ctx context.Context, n, m int) (*fleet, error) {
	f := &fleet{}
	for i := range n {
		addr, err := freeAddr()
		if err != nil {
			return f, err
		}
		env := s.env()
		env["INGRESS_ADDR"], env["SLUICE_ADMIN_TOKEN"] = addr, s.admin
		env["INGRESS_MAX_CONNS_PER_IP"] = "0"
		if s.cfg.h2c {
			env["INGRESS_H2C"] = "true"
		}
		p, err := startProc(fmt.Sprintf("ingress-%d", i+1), filepath.Join(s.bin, "ingress"), s.dir, env)
		if err != nil {
			return f, err
		}
		f.ings, f.ingAddrs = append(f.ings, p), append(f.ingAddrs, addr)
		if err := p.waitReady(ctx, 30*time.Second, probeHTTP(s.http, "http://"+addr+"/readyz")); err != nil {
			return f, err
		}
	}
	for i := range m {
		addr, err := freeAddr()
		if err != nil {
			return f, err
		}
		env := s.env()
		env["WORKER_ADDR"], env["WORKER_CONCURRENCY"] = addr, fmt.Sprint(s.cfg.workerConc)
		env["WORKER_KEY_SHARE"] = "1"
		if s.cfg.h2c {
			env["UPSTREAM_H2C"] = "true"
		}
		p, err := startProc(fmt.Sprintf("worker-%d", i+1), filepath.Join(s.bin, "worker"), s.dir, env)
		if err != nil {
			return f, err
		}
		f.wrks = append(f.wrks, p)
		if err := p.waitReady(ctx, 30*time.Second, probeHTTP(s.http, "http://"+addr+"/readyz")); err != nil {
			return f, err
		}
	}
	return f, nil
}

// scaleSection stops the stack's single ingress and worker, then, for every shape, starts
// its processes, waits for a request to go through each ingress, and runs the scale
// concurrencies (and c=1 on the 1×1 shape). The single ingress and worker stay stopped.
func (s *stack) scaleSection(ctx context.Context) ([]scaleShape, error) {
	if err := s.stopSluice(); err != nil {
		return nil, fmt.Errorf("stop the single ingress and worker: %w", err)
	}
	var shapes []scaleShape
	for _, n := range s.cfg.scaleIngresses {
		for _, m := range s.cfg.scaleWorkers {
			if ctx.Err() != nil {
				return shapes, ctx.Err()
			}
			sh := scaleShape{Ingresses: n, Workers: m}
			err := s.runShape(ctx, &sh)
			if err != nil {
				sh.Error = err.Error()
				logf("scale %d×%d: %v", n, m, err)
			}
			shapes = append(shapes, sh)
		}
	}
	return shapes, nil
}

func (s *stack) runShape(ctx context.Context, sh *scaleShape) (err error) {
	logf("scale: starting %d ingress(es) and %d worker(s)", sh.Ingresses, sh.Workers)
	f, err := s.startFleet(ctx, sh.Ingresses, sh.Workers)
	defer func() {
		if serr := f.stop(); serr != nil && err == nil {
			err = serr
		}
	}()
	if err != nil {
		return err
	}
	urls := make([]string, len(f.ingAddrs))
	for i, a := range f.ingAddrs {
		urls[i] = "http://" + a + "/v1/chat/completions"
		if err := s.waitRoutesAt(ctx, a); err != nil {
			return err
		}
	}
	concs := s.cfg.scaleConc
	if sh.Ingresses == 1 && sh.Workers == 1 {
		concs = append([]int{1}, concs...)
	}
	for _, c := range concs {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		m := newCPUMeter(f.pids(s), s.dbName)
		var share cpuShare
		l := load{req: s.sluiceReq(false), spread: urls, conc: c, warmup: s.cfg.warmup, dur: s.cfg.duration,
			h2c: s.cfg.h2c, onMeasure: func(open bool) {
				if open {
					m.open()
				} else {
					share = m.close()
				}
			}}
		res := l.run(ctx)
		pt := scalePoint{Concurrency: c, Result: res, CPU: share}
		logf("scale %d×%d c=%d: %.0f req/s p50 %.3f ms p99 %.3f ms (errors %d); other %.2f cores", sh.Ingresses,
			sh.Workers, c, res.Rate, res.Latency.P50, res.Latency.P99, res.Errors, pt.CPU.Other)
		sh.Points = append(sh.Points, pt)
	}
	return nil
}

// waitRoutesAt waits until a chat completion through the ingress at addr succeeds.
func (s *stack) waitRoutesAt(ctx context.Context, addr string) error {
	saved := s.ingAddr
	s.ingAddr = addr
	defer func() { s.ingAddr = saved }()
	return s.waitRoutes(ctx)
}
