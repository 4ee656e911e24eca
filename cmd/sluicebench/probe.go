package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/sluicehq/sluice/pkg/httpbody"
)

// procSample is one scrape of a Sluice process's /metrics: series every Go process with the
// Prometheus Go and process collectors exports, whatever else changes inside it. Stack and
// heap are optional (0 if absent); they split RSS into goroutine stacks and heap.
type procSample struct {
	Goroutines float64 `json:"goroutines"`
	RSS        float64 `json:"rss_bytes"`
	Stack      float64 `json:"stack_inuse_bytes"`
	Heap       float64 `json:"heap_inuse_bytes"`
}

// scrape reads one procSample from base/metrics. It fails if go_goroutines or
// process_resident_memory_bytes is missing.
func scrape(ctx context.Context, c *http.Client, base string) (procSample, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/metrics", nil)
	if err != nil {
		return procSample{}, err
	}
	resp, err := c.Do(req) //nolint:bodyclose // released by httpbody.Close, the one release helper
	if err != nil {
		return procSample{}, fmt.Errorf("scrape %s: %w", base, err)
	}
	defer httpbody.Close(resp)
	if resp.StatusCode != http.StatusOK {
		return procSample{}, fmt.Errorf("scrape %s: status %d", base, resp.StatusCode)
	}
	vals, found, err := parseMetrics(io.LimitReader(resp.Body, 16<<20), "go_goroutines", "process_resident_memory_bytes",
		"go_memstats_stack_inuse_bytes", "go_memstats_heap_inuse_bytes")
	if err != nil {
		return procSample{}, fmt.Errorf("scrape %s: %w", base, err)
	}
	for i, n := range []string{"go_goroutines", "process_resident_memory_bytes"} {
		if !found[i] {
			return procSample{}, fmt.Errorf("scrape %s: metric %s missing", base, n)
		}
	}
	return procSample{Goroutines: vals[0], RSS: vals[1], Stack: vals[2], Heap: vals[3]}, nil
}

// parseMetrics returns the values of the unlabelled samples named in the Prometheus text r,
// in the order asked, and which of them were found.
func parseMetrics(r io.Reader, names ...string) ([]float64, []bool, error) {
	out := make([]float64, len(names))
	found := make([]bool, len(names))
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		for i, n := range names {
			v, ok := strings.CutPrefix(line, n+" ")
			if !ok {
				continue
			}
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil {
				return nil, nil, fmt.Errorf("metric %s: %w", n, err)
			}
			out[i], found[i] = f, true
		}
	}
	if err := sc.Err(); err != nil {
		return nil, nil, err
	}
	return out, found, nil
}

// clockTick is USER_HZ, the unit of /proc CPU times: 100 on every Linux architecture Go
// supports (the kernel fixes it for user space whatever CONFIG_HZ is).
const clockTick = 100

// procCPU returns the CPU time (user + system) pid has used, from /proc/<pid>/stat.
func procCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	return parseProcStat(b)
}

// parseProcStat reads utime and stime (fields 14 and 15) from a /proc/<pid>/stat line. The
// command name (field 2) is in parentheses and may hold spaces, so fields count from the
// last ')'.
func parseProcStat(b []byte) (time.Duration, error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("bad /proc stat line")
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state); utime is field 14, stime field 15.
	if len(f) < 13 {
		return 0, fmt.Errorf("bad /proc stat line")
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("bad /proc stat times")
	}
	return time.Duration(ut+st) * time.Second / clockTick, nil
}

// systemCPU returns, for the whole machine, the CPU time busy in this VM, stolen by the
// hypervisor, and the total, from /proc/stat.
func systemCPU() (busy, steal, total time.Duration, err error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0, 0, err
	}
	return parseSystemStat(b)
}

func parseSystemStat(b []byte) (busy, steal, total time.Duration, err error) {
	line, _, _ := bytes.Cut(b, []byte("\n"))
	f := strings.Fields(string(line))
	if len(f) < 5 || f[0] != "cpu" {
		return 0, 0, 0, fmt.Errorf("bad /proc/stat")
	}
	var sum, idle, st int64
	// user nice system idle iowait irq softirq steal [guest guest_nice, already in user/nice]
	for i, s := range f[1:min(len(f), 9)] {
		v, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return 0, 0, 0, fmt.Errorf("bad /proc/stat: %w", err)
		}
		sum += v
		switch i {
		case 3, 4: // idle, iowait
			idle += v
		case 7:
			st = v
		}
	}
	tick := time.Second / clockTick
	return time.Duration(sum-idle-st) * tick, time.Duration(st) * tick, time.Duration(sum) * tick, nil
}

// backendsOf returns the pids of the Postgres backends connected to database db: their
// command line reads "postgres: <cluster>: <user> <db> <host> <state>".
func backendsOf(db string) []int {
	ents, _ := os.ReadDir("/proc")
	var pids []int
	want := " " + db + " "
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || !bytes.HasPrefix(b, []byte("postgres: ")) {
			continue
		}
		if strings.Contains(string(bytes.ReplaceAll(b, []byte{0}, []byte(" "))), want) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// cpuMeter measures, over a window, the CPU each bench process used, the Postgres backends
// of the bench database, this process (the load generator), and everything else on the
// machine: other engineers' work shows up as "other".
type cpuMeter struct {
	procs  map[string]int // name → pid
	db     string
	start  map[string]time.Duration
	pg     map[int]time.Duration
	busy   time.Duration
	steal  time.Duration
	total  time.Duration
	opened time.Time
}

// cpuShare is a window's CPU use, in cores (1.0 = one core busy the whole window).
type cpuShare struct {
	Cores   map[string]float64 `json:"cores"`
	Machine float64            `json:"machine_busy_cores"`
	Other   float64            `json:"other_cores"`
	// Steal is CPU the hypervisor gave to other VMs while this one wanted it.
	Steal   float64 `json:"steal_cores"`
	Seconds float64 `json:"window_s"`
}

func newCPUMeter(procs map[string]int, db string) *cpuMeter {
	return &cpuMeter{procs: procs, db: db}
}

func (m *cpuMeter) open() {
	m.start = map[string]time.Duration{}
	for name, pid := range m.procs {
		m.start[name], _ = procCPU(pid)
	}
	m.start["loadgen"], _ = procCPU(os.Getpid())
	m.pg = map[int]time.Duration{}
	for _, pid := range backendsOf(m.db) {
		m.pg[pid], _ = procCPU(pid)
	}
	m.busy, m.steal, m.total, _ = systemCPU()
	m.opened = time.Now()
}

func (m *cpuMeter) close() cpuShare {
	secs := time.Since(m.opened).Seconds()
	s := cpuShare{Cores: map[string]float64{}, Seconds: secs}
	if secs <= 0 {
		return s
	}
	ours := 0.0
	add := func(name string, d time.Duration) {
		c := d.Seconds() / secs
		s.Cores[name] += c
		ours += c
	}
	for name, pid := range m.procs {
		now, err := procCPU(pid)
		if err == nil {
			add(name, now-m.start[name])
		}
	}
	self, _ := procCPU(os.Getpid())
	add("loadgen", self-m.start["loadgen"])
	for _, pid := range backendsOf(m.db) {
		now, err := procCPU(pid)
		if err == nil {
			add("postgres", now-m.pg[pid]) // a backend that appeared in the window starts at 0
		}
	}
	busy, steal, total, err := systemCPU()
	if err == nil && total > m.total {
		// total counts every CPU's time; busy/total × ncpu is cores busy.
		ncpu := float64(runtime.NumCPU())
		s.Machine = float64(busy-m.busy) / float64(total-m.total) * ncpu
		s.Steal = float64(steal-m.steal) / float64(total-m.total) * ncpu
		s.Other = max(s.Machine-ours, 0)
	}
	return foldRoles(s)
}

// machine describes where the numbers were taken.
type machine struct {
	CPUs       int    `json:"cpus"`
	CPUModel   string `json:"cpu_model"`
	MemTotal   string `json:"mem_total"`
	Kernel     string `json:"kernel"`
	Go         string `json:"go"`
	Postgres   string `json:"postgres"`
	PGSettings string `json:"postgres_settings"`
	NATS       string `json:"nats_server"`
	LoadBefore string `json:"loadavg_before"`
	LoadAfter  string `json:"loadavg_after"`
}

func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

func cpuModel() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return "?"
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "?"
}

func memTotal() string {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return "?"
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "MemTotal:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err == nil {
				return fmt.Sprintf("%.1f GiB", float64(kb)/(1<<20))
			}
		}
	}
	return "?"
}

func kernel() string {
	b, err := os.ReadFile("/proc/sys/kernel/osrelease")
	if err != nil {
		return "?"
	}
	return strings.TrimSpace(string(b))
}
