package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// The dashboard and alert rules shipped under deploy/, and the README that lists the metrics.
const (
	dashboardPath = "../../deploy/grafana/sluice.json"
	alertsPath    = "../../deploy/prometheus/alerts.yml"
	readmePath    = "../../README.md"
)

// dashboard is the part of a Grafana dashboard model the tests read; unknown fields are
// allowed (Grafana adds many), the ones named here must have the right types.
type dashboard struct {
	Title         string `json:"title"`
	UID           string `json:"uid"`
	SchemaVersion int    `json:"schemaVersion"`
	Templating    struct {
		List []struct {
			Name  string `json:"name"`
			Type  string `json:"type"`
			Query string `json:"query"`
		} `json:"list"`
	} `json:"templating"`
	Panels []panel `json:"panels"`
}

type panel struct {
	ID         int    `json:"id"`
	Type       string `json:"type"`
	Title      string `json:"title"`
	Datasource *struct {
		Type string `json:"type"`
		UID  string `json:"uid"`
	} `json:"datasource"`
	GridPos struct{ H, W, X, Y int } `json:"gridPos"`
	Targets []struct {
		RefID string `json:"refId"`
		Expr  string `json:"expr"`
	} `json:"targets"`
	Panels []panel `json:"panels"` // a collapsed row's
}

// readDashboard parses the dashboard and checks its structure: a schema version Grafana 10
// and 11 load, a datasource variable every panel and query uses, unique panel ids and
// titles, panels inside the 24-column grid, and a PromQL expression in every query.
// It returns the expressions by panel title.
func readDashboard(t *testing.T) map[string][]string {
	t.Helper()
	b, err := os.ReadFile(dashboardPath)
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&d); err != nil {
		t.Fatalf("%s: %v", dashboardPath, err)
	}
	if d.Title == "" || d.UID == "" || d.SchemaVersion < 36 || d.SchemaVersion > 41 {
		t.Errorf("dashboard title %q uid %q schemaVersion %d; want a title, a uid, and schemaVersion 36..41",
			d.Title, d.UID, d.SchemaVersion)
	}
	dsVar := ""
	for _, v := range d.Templating.List {
		if v.Type == "datasource" && v.Query == "prometheus" {
			dsVar = v.Name
		}
	}
	if dsVar == "" {
		t.Fatal("dashboard has no Prometheus datasource variable")
	}
	wantUID := "${" + dsVar + "}"
	exprs := map[string][]string{}
	ids := map[int]bool{}
	var walk func([]panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			if ids[p.ID] || p.ID == 0 {
				t.Errorf("panel %q: id %d missing or not unique", p.Title, p.ID)
			}
			ids[p.ID] = true
			if p.GridPos.W < 1 || p.GridPos.X < 0 || p.GridPos.X+p.GridPos.W > 24 || p.GridPos.H < 1 {
				t.Errorf("panel %q: gridPos %+v outside the 24-column grid", p.Title, p.GridPos)
			}
			if p.Type == "row" {
				walk(p.Panels)
				continue
			}
			if _, dup := exprs[p.Title]; dup || p.Title == "" {
				t.Errorf("panel title %q missing or not unique", p.Title)
			}
			if !slices.Contains([]string{"timeseries", "state-timeline", "bargauge", "stat", "gauge", "table"}, p.Type) {
				t.Errorf("panel %q: type %q", p.Title, p.Type)
			}
			if p.Datasource == nil || p.Datasource.UID != wantUID || p.Datasource.Type != "prometheus" {
				t.Errorf("panel %q: datasource %+v, want prometheus %s", p.Title, p.Datasource, wantUID)
			}
			if len(p.Targets) == 0 {
				t.Errorf("panel %q has no queries", p.Title)
			}
			refs := map[string]bool{}
			for _, tg := range p.Targets {
				if tg.RefID == "" || refs[tg.RefID] || strings.TrimSpace(tg.Expr) == "" {
					t.Errorf("panel %q: query %q with refId %q (missing or repeated)", p.Title, tg.Expr, tg.RefID)
				}
				refs[tg.RefID] = true
				exprs[p.Title] = append(exprs[p.Title], tg.Expr)
			}
		}
	}
	walk(d.Panels)
	return exprs
}

// rulesFile is a Prometheus rule file, decoded strictly (an unknown or misspelt field fails).
type rulesFile struct {
	Groups []struct {
		Name     string `yaml:"name"`
		Interval string `yaml:"interval"`
		Rules    []struct {
			Alert         string            `yaml:"alert"`
			Record        string            `yaml:"record"`
			Expr          string            `yaml:"expr"`
			For           string            `yaml:"for"`
			KeepFiringFor string            `yaml:"keep_firing_for"`
			Labels        map[string]string `yaml:"labels"`
			Annotations   map[string]string `yaml:"annotations"`
		} `yaml:"rules"`
	} `yaml:"groups"`
}

var (
	alertName   = regexp.MustCompile(`^Sluice[A-Z][A-Za-z0-9]*$`)
	promDur     = regexp.MustCompile(`^([0-9]+(ms|s|m|h|d|w|y))+$`)
	labelsInTpl = regexp.MustCompile(`\$labels\.([a-zA-Z_][a-zA-Z0-9_]*)`)
)

// readAlerts parses the alert rules and checks their structure: named groups of alerting
// rules, each with a unique Sluice… name, an expression, a Prometheus duration for "for",
// a severity, a summary and a description, and annotations that only name labels the
// expression keeps (by a by or on clause). It returns the expressions by alert name.
func readAlerts(t *testing.T) map[string]string {
	t.Helper()
	b, err := os.ReadFile(alertsPath)
	if err != nil {
		t.Fatal(err)
	}
	var f rulesFile
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&f); err != nil {
		t.Fatalf("%s: %v", alertsPath, err)
	}
	if len(f.Groups) == 0 {
		t.Fatal("no rule groups")
	}
	exprs := map[string]string{}
	groups := map[string]bool{}
	for _, g := range f.Groups {
		if g.Name == "" || groups[g.Name] || len(g.Rules) == 0 {
			t.Errorf("group %q: missing or repeated name, or no rules", g.Name)
		}
		groups[g.Name] = true
		for _, r := range g.Rules {
			if r.Record != "" || !alertName.MatchString(r.Alert) {
				t.Errorf("group %s: rule %q/%q: want an alerting rule named Sluice…", g.Name, r.Alert, r.Record)
				continue
			}
			if _, dup := exprs[r.Alert]; dup {
				t.Errorf("alert %s defined twice", r.Alert)
			}
			exprs[r.Alert] = r.Expr
			if strings.TrimSpace(r.Expr) == "" {
				t.Errorf("alert %s: no expr", r.Alert)
			}
			if !promDur.MatchString(r.For) {
				t.Errorf("alert %s: for %q is not a Prometheus duration", r.Alert, r.For)
			}
			if !slices.Contains([]string{"info", "warning", "critical"}, r.Labels["severity"]) {
				t.Errorf("alert %s: severity %q, want info, warning or critical", r.Alert, r.Labels["severity"])
			}
			if strings.TrimSpace(r.Annotations["summary"]) == "" || strings.TrimSpace(r.Annotations["description"]) == "" {
				t.Errorf("alert %s: want a summary and a description", r.Alert)
			}
			for _, a := range r.Annotations {
				if strings.Count(a, "{{") != strings.Count(a, "}}") {
					t.Errorf("alert %s: unbalanced template in %q", r.Alert, a)
				}
				for _, m := range labelsInTpl.FindAllStringSubmatch(a, -1) {
					if !regexp.MustCompile(`(by|on) \([^)]*\b` + m[1] + `\b`).MatchString(r.Expr) {
						t.Errorf("alert %s: annotation names $labels.%s, which its expr does not keep", r.Alert, m[1])
					}
				}
			}
		}
	}
	for _, want := range []string{"SluiceQueueGrowing", "SluiceCircuitOpen", "SluiceUpstreamErrorRate", "SluiceGoroutinesNearBound",
		"SluiceOutcomesBehind"} {
		if _, ok := exprs[want]; !ok {
			t.Errorf("alert %s missing", want)
		}
	}
	return exprs
}

// TestDeployFilesStructure_Issue14_6: the dashboard and the alert rules parse and have the
// structure Grafana and Prometheus need; every expression is balanced and names at least one
// metric. (TestDashboardMetricsExported_Issue14_7 checks the names against running processes.)
func TestDeployFilesStructure_Issue14_6(t *testing.T) {
	t.Parallel()
	check := func(where, expr string) {
		names, ok := metricNames(expr)
		if !ok || len(names) == 0 {
			t.Errorf("%s: expression %q is unbalanced or names no metric", where, expr)
		}
	}
	for title, es := range readDashboard(t) {
		for _, e := range es {
			check("panel "+title, e)
		}
	}
	for name, e := range readAlerts(t) {
		check("alert "+name, e)
	}
	promtoolCheck(t)
}

// promtoolCheck, where Prometheus's promtool is installed (the Debian prometheus package),
// has Prometheus's own parser check the alert rules and every dashboard query (as
// recording rules, Grafana's $__ variables replaced by a range). CI has no promtool: there
// the checks above stand alone.
func promtoolCheck(t *testing.T) {
	t.Helper()
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Log("promtool not installed: PromQL not checked by Prometheus's parser")
		return
	}
	var rules strings.Builder
	rules.WriteString("groups:\n  - name: dashboard\n    rules:\n")
	vars := strings.NewReplacer("$__rate_interval", "5m", "$__range", "6h", "${__range}", "6h")
	for _, es := range readDashboard(t) {
		for i, e := range es {
			fmt.Fprintf(&rules, "      - record: dashboard:query:%d\n        expr: %s\n", i, strconv.Quote(vars.Replace(e)))
		}
	}
	file := filepath.Join(t.TempDir(), "dashboard.yml")
	if err := os.WriteFile(file, []byte(rules.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{alertsPath, file} {
		out, err := exec.CommandContext(t.Context(), promtool, "check", "rules", f).CombinedOutput()
		if err != nil {
			t.Errorf("promtool check rules %s: %v\n%s", f, err, out)
		}
	}
}
