package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestChartChecks_Issue13_4: the chart lints and every object it renders with the default
// and the production values decodes strictly.
func TestChartChecks_Issue13_4(t *testing.T) {
	n, err := check("../sluice")
	if err != nil {
		t.Fatal(err)
	}
	if n < 15 {
		t.Errorf("%d objects rendered, want the Deployments, Services, HPAs, PDBs, Job, Secrets and the rest", n)
	}
}

// TestChartTypoFails_Issue13_4: a misspelt field name in a template fails the check.
func TestChartTypoFails_Issue13_4(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "sluice")
	if err := os.CopyFS(dir, os.DirFS("../sluice")); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ file, from, to string }{
		{"templates/ingress.yaml", "containerPort:", "containerPorts:"},
		{"templates/worker.yaml", "minReplicaCount:", "minReplicas:"},
	} {
		path := filepath.Join(dir, tc.file)
		orig, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		typo := strings.Replace(string(orig), tc.from, tc.to, 1)
		if typo == string(orig) {
			t.Fatalf("%s has no %q", tc.file, tc.from)
		}
		if err := os.WriteFile(path, []byte(typo), 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := check(dir); err == nil || !strings.Contains(err.Error(), "unknown field") {
			t.Errorf("%s %q → %q: check = %v, want an unknown-field error", tc.file, tc.from, tc.to, err)
		}
		if err := os.WriteFile(path, orig, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
