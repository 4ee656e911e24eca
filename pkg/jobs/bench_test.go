package jobs_test

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/sluicehq/sluice/pkg/jobs"
)

// benchJob is a typical sync chat job: a 30-word prompt, a reply subject, both deadlines.
func benchJob() *jobs.Job {
	now := time.Date(2026, 11, 26, 10, 0, 0, 123456789, time.UTC)
	return &jobs.Job{
		ID: "job_01JDXQ4V6Y8K2M3N4P5Q6R7S8T", KeyID: "key_01JDXQ4V6Y8K2M3N4P5Q6R7S8T",
		Endpoint: jobs.EndpointChat, Model: "gpt-4o-mini",
		Body: json.RawMessage(`{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Sluice bench: the quick ` +
			`brown fox jumps over the lazy dog while seven wizards quietly judge boxing matches near the old stone ` +
			`bridge under a pale blue autumn sky today"}]}`),
		CreatedAt: now, Deadline: now.Add(15 * time.Minute),
		Reply: "relay.reply.ing_5f3a9c.tok_8e2b71d4",
	}
}

// BenchmarkEncode measures Job.Encode, done once per job by the ingress before publishing.
func BenchmarkEncode(b *testing.B) {
	j := benchJob()
	enc, err := j.Encode()
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(enc)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := j.Encode(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDecode measures Decode, done once per delivery by the worker.
func BenchmarkDecode(b *testing.B) {
	enc, err := benchJob().Encode()
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(enc)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := jobs.Decode(enc); err != nil {
			b.Fatal(err)
		}
	}
}
