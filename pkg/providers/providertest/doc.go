// Package providertest runs a fault-injecting fake LLM upstream over real HTTP.
//
// An [Upstream] speaks enough of the OpenAI (chat completions, completions,
// embeddings) and Anthropic (messages) wire formats for adapters, tests,
// benchmarks and `make run` to talk to it as if it were a real provider, and
// misbehaves on request: rate limits, 5xx, connection resets, truncated and
// cut streams, dripped bytes, hangs, invalid JSON and oversized bodies.
//
// Each request gets one [Mode], chosen in this order: the X-Fake-Mode header;
// a model named "fake-<mode>" or ending in ":<mode>" (such as
// "gpt-4o-mini:429"); the weighted [Config.Mix]; otherwise [ModeOK].
//
// Answers are deterministic functions of the request, so tests can compare
// them: the content is "Echo:" followed by the first 200 words of the last
// user message (or the last prompt), and tokens are counted in words:
//
//	prompt tokens     = Σ words(text) + 3 per text, where the texts are the
//	                    messages (plus the Anthropic system prompt as one more),
//	                    the completion prompts, or the embedding inputs
//	completion tokens = words(content)
//
// A word is a run of non-space characters as split by strings.Fields. A
// max_tokens smaller than the answer cuts it to that many words and finishes
// with "length" (OpenAI) or "max_tokens" (Anthropic).
//
// Invariants: a streamed answer's pieces concatenate to exactly the content of
// the same non-streamed request; [Stats] adds usage only for answers written
// in full; no handler outlives its client's disconnect or [Upstream.Close];
// and the Upstream starts no goroutines of its own.
package providertest
