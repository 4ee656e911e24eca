// Command check lints the Sluice Helm chart and renders it with its default and its
// production values, through the helm.sh/helm/v3 Go module, then strictly decodes every
// rendered object into its k8s.io/api type (or, for the KEDA and Prometheus Operator
// resources, a struct of their fields), so a misspelt field fails. It is its own module so
// that the main module does not depend on Helm or Kubernetes. `make helm-check` runs it.
package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/engine"
	"helm.sh/helm/v3/pkg/lint"
	"helm.sh/helm/v3/pkg/lint/support"
	"sigs.k8s.io/yaml"
)

func main() {
	dir := "deploy/helm/sluice"
	if len(os.Args) > 1 {
		dir = os.Args[1]
	}
	n, err := check(dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, "helm-check:", err)
		os.Exit(1)
	}
	fmt.Printf("helm-check: %s lints clean; %d objects rendered and strictly decoded\n", dir, n)
}

// defaultSecrets are what `helm template --set` would give for the two required secrets
// when rendering the default values.
var defaultSecrets = map[string]any{"secrets": map[string]any{"encryptionKey": "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=",
	"adminToken": "0123456789abcdef0123"}}

// check lints and renders the chart at dir with each value set, returning the number of
// objects decoded.
func check(dir string) (int, error) {
	prod, err := chartutil.ReadValuesFile(filepath.Join(dir, "values-production.yaml"))
	if err != nil {
		return 0, err
	}
	total := 0
	for _, vs := range []struct {
		name string
		vals map[string]any
	}{{"default", defaultSecrets}, {"production", prod}} {
		if err := lintChart(dir, vs.vals); err != nil {
			return 0, fmt.Errorf("%s values: %w", vs.name, err)
		}
		n, err := render(dir, vs.vals)
		if err != nil {
			return 0, fmt.Errorf("%s values: %w", vs.name, err)
		}
		total += n
	}
	return total, nil
}

// lintChart runs helm lint. The NATS chart is an optional dependency fetched by `helm
// dependency update`, which needs the network: its absence is not an error here.
func lintChart(dir string, vals map[string]any) error {
	var errs []error
	for _, m := range lint.All(dir, vals, "sluice", false).Messages {
		if m.Severity < support.WarningSev {
			continue
		}
		if strings.Contains(m.Err.Error(), "missing these dependencies") && strings.Contains(m.Err.Error(), "nats") {
			continue
		}
		errs = append(errs, fmt.Errorf("lint: %s: %w", m.Path, m.Err))
	}
	return errors.Join(errs...)
}

// render renders the chart with vals and strictly decodes every object.
func render(dir string, vals map[string]any) (int, error) {
	ch, err := loader.Load(dir)
	if err != nil {
		return 0, err
	}
	rv, err := chartutil.ToRenderValues(ch, vals, chartutil.ReleaseOptions{Name: "sluice", Namespace: "sluice",
		IsInstall: true, Revision: 1}, nil)
	if err != nil {
		return 0, err
	}
	out, err := engine.Render(ch, rv)
	if err != nil {
		return 0, err
	}
	names := make([]string, 0, len(out))
	for name := range out {
		names = append(names, name)
	}
	sort.Strings(names)
	n := 0
	var errs []error
	for _, name := range names {
		if !strings.HasSuffix(name, ".yaml") {
			continue
		}
		for _, doc := range bytes.Split([]byte(out[name]), []byte("\n---")) {
			if len(bytes.TrimSpace(doc)) == 0 || isComment(doc) {
				continue
			}
			if err := decode(doc); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", name, err))
				continue
			}
			n++
		}
	}
	if n == 0 && len(errs) == 0 {
		return 0, errors.New("the chart rendered no objects")
	}
	return n, errors.Join(errs...)
}

func isComment(doc []byte) bool {
	for line := range strings.Lines(string(doc)) {
		if l := strings.TrimSpace(line); l != "" && !strings.HasPrefix(l, "#") {
			return false
		}
	}
	return true
}

// decode strictly decodes one rendered object into the type its apiVersion and kind name.
func decode(doc []byte) error {
	var tm struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
	}
	if err := yaml.Unmarshal(doc, &tm); err != nil {
		return fmt.Errorf("not YAML: %w", err)
	}
	newObj, ok := kinds[tm.APIVersion+"/"+tm.Kind]
	if !ok {
		return fmt.Errorf("%s %s: no type to check it against", tm.APIVersion, tm.Kind)
	}
	if err := yaml.UnmarshalStrict(doc, newObj()); err != nil {
		return fmt.Errorf("%s %s: %w", tm.APIVersion, tm.Kind, err)
	}
	return nil
}
