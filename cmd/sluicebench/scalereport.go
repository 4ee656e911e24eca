package main

import (
	"fmt"
	"io"
)

// scaleMarkdown writes the scale section: throughput and latency per shape, then where the
// CPU went, by role, in cores and µs per request.
func (r *report) scaleMarkdown(w io.Writer) {
	if len(r.Scale) == 0 {
		return
	}
	fmt.Fprintf(w, "### Scaling: ingress × worker processes on one NATS and one Postgres (sync, fake upstream 0 ms)\n\n")
	base := map[int]float64{} // concurrency → req/s of the first shape
	var rows, cpuRows [][]string
	names := []string{"ingress", "worker", "nats", "postgres", "fakeupstream", "loadgen"}
	for i, sh := range r.Scale {
		shape := fmt.Sprintf("%d × %d", sh.Ingresses, sh.Workers)
		if sh.Error != "" {
			rows = append(rows, []string{shape, "-", "failed: " + trim(sh.Error, 80), "", "", "", "", ""})
		}
		for _, p := range sh.Points {
			if i == 0 {
				base[p.Concurrency] = p.Result.Rate
			}
			rel := "-"
			if b := base[p.Concurrency]; b > 0 {
				rel = fmt.Sprintf("%.2f×", p.Result.Rate/b)
			}
			rows = append(rows, []string{shape, fmt.Sprint(p.Concurrency), f0(p.Result.Rate), rel,
				f3(p.Result.Latency.P50), f3(p.Result.Latency.P99), errCell(p.Result), f2(p.CPU.Other)})
			c := p.CPU
			row := []string{shape, fmt.Sprint(p.Concurrency)}
			for _, n := range names {
				row = append(row, fmt.Sprintf("%.2f (%s)", c.Cores[n], perReq(c.Cores[n], p.Result.Rate)))
			}
			sluice := c.Cores["ingress"] + c.Cores["worker"] + c.Cores["nats"] + c.Cores["postgres"]
			row = append(row, fmt.Sprintf("%.2f (%s)", sluice, perReq(sluice, p.Result.Rate)), f2(c.Other), f2(c.Steal),
				f2(c.Machine))
			cpuRows = append(cpuRows, row)
		}
	}
	fmt.Fprintf(w, "Shape is ingresses × workers; clients are spread evenly over the ingresses; every worker has "+
		"WORKER_CONCURRENCY=%d; \"vs first\" is the throughput relative to the first shape at the same concurrency; "+
		"other is the CPU (cores) of everything else on the machine during the measured window.\n\n",
		r.Config.WorkerConcurrency)
	table(w, []string{"shape", "c", "req/s", "vs first", "p50 ms", "p99 ms", "errors", "other cores"}, rows)
	fmt.Fprintf(w, "CPU by role (every ingress summed, every worker summed): cores busy (of %d) and, in parentheses, "+
		"µs of CPU per request, from /proc/<pid>/stat:\n\n", r.Machine.CPUs)
	table(w, []string{"shape", "c", "ingress", "worker", "nats", "postgres", "fake upstream", "load generator",
		"Sluice total (ingress+worker+nats+postgres)", "other", "steal", "machine busy"}, cpuRows)
}
