package cli

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

type commonOnly struct{ Common }

func (c *commonOnly) Validate() error {
	check, errs := Checker()
	c.Check(check)
	return errors.Join(errs()...)
}

// TestNATSSettings_Issue9_5: the NATS settings reach jobs.ConnOptions as given, pairs and
// exclusions are checked at start, and NATS_URL (which may carry a password) never prints.
func TestNATSSettings_Issue9_5(t *testing.T) {
	t.Parallel()
	base := map[string]string{"DATABASE_URL": "postgres://x", "SLUICE_ENCRYPTION_KEY": "k",
		"NATS_URL": "nats://sluice:hunter2-secret@nats-1:4222"}
	with := func(kv ...string) map[string]string {
		m := map[string]string{}
		for k, v := range base {
			m[k] = v
		}
		for i := 0; i+1 < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return m
	}
	var c commonOnly
	if err := Load(&c, with("NATS_CREDS", "/run/nats/sluice.creds", "NATS_TLS_CA", "/ca.pem",
		"NATS_TLS_CERT", "/c.pem", "NATS_TLS_KEY", "/k.pem")); err != nil {
		t.Fatalf("Load: %v", err)
	}
	o := c.NATS("sluice-worker")
	if o.URL != base["NATS_URL"] || o.Name != "sluice-worker" || o.Creds != "/run/nats/sluice.creds" || o.NkeySeed != "" ||
		o.TLSCA != "/ca.pem" || o.TLSCert != "/c.pem" || o.TLSKey != "/k.pem" {
		t.Errorf("NATS() = %+v", o)
	}
	if s := fmt.Sprintf("%v %+v", c, c.Common); strings.Contains(s, "hunter2") {
		t.Errorf("the config prints NATS_URL's password: %s", s)
	}
	for _, tt := range []struct {
		env  map[string]string
		want string
	}{
		{with("NATS_CREDS", "/a.creds", "NATS_NKEY", "/a.nk"), "NATS_CREDS and NATS_NKEY"},
		{with("NATS_TLS_CERT", "/c.pem"), "NATS_TLS_CERT and NATS_TLS_KEY"},
		{with("NATS_TLS_KEY", "/k.pem"), "NATS_TLS_CERT and NATS_TLS_KEY"},
	} {
		var c commonOnly
		if err := Load(&c, tt.env); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Load(%v) = %v, want an error naming %s", tt.env, err, tt.want)
		}
	}
}

// TestQueueReplicas_Issue13_1: QUEUE_REPLICAS is 1 by default, reaches the queue's
// configuration (both streams and both consumers take it from there), and 0 or 6 stop
// the binary at start.
func TestQueueReplicas_Issue13_1(t *testing.T) {
	t.Parallel()
	env := func(v string) map[string]string {
		m := map[string]string{"DATABASE_URL": "postgres://x", "SLUICE_ENCRYPTION_KEY": "k"}
		if v != "" {
			m["QUEUE_REPLICAS"] = v
		}
		return m
	}
	for _, tt := range []struct {
		v    string
		want int
	}{{"", 1}, {"3", 3}, {"5", 5}} {
		var c commonOnly
		if err := Load(&c, env(tt.v)); err != nil {
			t.Fatalf("QUEUE_REPLICAS=%q: %v", tt.v, err)
		}
		if got := c.Queue().Replicas; got != tt.want {
			t.Errorf("QUEUE_REPLICAS=%q: Queue().Replicas = %d, want %d", tt.v, got, tt.want)
		}
	}
	for _, v := range []string{"0", "6", "-1"} {
		var c commonOnly
		if err := Load(&c, env(v)); err == nil || !strings.Contains(err.Error(), "QUEUE_REPLICAS") {
			t.Errorf("QUEUE_REPLICAS=%s: Load = %v, want an error naming it", v, err)
		}
	}
}
