package main

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestScaleFlags_Issue13_5(t *testing.T) {
	t.Parallel()
	c, err := parseConfig([]string{"-sections", "scale", "-workers", "1,2,4", "-ingresses", "1,2"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if !c.sections["scale"] || !slices.Equal(c.scaleWorkers, []int{1, 2, 4}) || !slices.Equal(c.scaleIngresses, []int{1, 2}) ||
		!slices.Equal(c.scaleConc, []int{64}) {
		t.Errorf("parsed %v workers %v ingresses %v conc %v", c.sections, c.scaleWorkers, c.scaleIngresses, c.scaleConc)
	}
	def, err := parseConfig(nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if def.sections["scale"] {
		t.Error("the scale section runs by default; make bench should not start it")
	}
	if _, err := parseConfig([]string{"-workers", "1,17"}, io.Discard); err == nil {
		t.Error("-workers 17 accepted")
	}
}

func TestFoldRoles_Issue13_5(t *testing.T) {
	t.Parallel()
	got := foldRoles(cpuShare{Cores: map[string]float64{"ingress/1": 0.25, "ingress/2": 0.5, "worker/1": 1, "nats": 0.125}})
	want := map[string]float64{"ingress": 0.75, "worker": 1, "nats": 0.125}
	if len(got.Cores) != len(want) {
		t.Fatalf("got %v, want %v", got.Cores, want)
	}
	for k, v := range want {
		if got.Cores[k] != v {
			t.Errorf("%s = %v, want %v", k, got.Cores[k], v)
		}
	}
}

// TestLoadSpread_Issue13_5: a load with spread sends from every client to its own server of
// the list, so both ingresses of a 2-ingress shape carry the load.
func TestLoadSpread_Issue13_5(t *testing.T) {
	t.Parallel()
	var hits [2]atomic.Int64
	var urls []string
	for i := range hits {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			hits[i].Add(1)
		}))
		t.Cleanup(srv.Close)
		urls = append(urls, srv.URL)
	}
	l := load{req: request{method: http.MethodGet, url: "http://127.0.0.1:1/unused"}, spread: urls, conc: 4,
		count: 200}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	res := l.run(ctx)
	if res.OK != 200 || res.Errors != 0 {
		t.Fatalf("ok %d errors %d (%s)", res.OK, res.Errors, res.FirstErr)
	}
	for i := range hits {
		if hits[i].Load() == 0 {
			t.Errorf("server %d got no request", i)
		}
	}
}

func TestNATSClusterFlag_Issue13_5(t *testing.T) {
	t.Parallel()
	c, err := parseConfig([]string{"-nats-cluster", "3"}, io.Discard)
	if err != nil || c.natsCluster != 3 {
		t.Fatalf("-nats-cluster 3: %v, %+v", err, c)
	}
	if _, err := parseConfig([]string{"-nats-cluster", "2"}, io.Discard); err == nil {
		t.Error("-nats-cluster 2 accepted: an even cluster has no majority to spare")
	}
	if got := natsNote("v2.15.2", 3); !strings.Contains(got, "cluster of 3") || !strings.Contains(got, "QUEUE_REPLICAS=3") {
		t.Errorf("natsNote = %q", got)
	}
}
