package providers

import (
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"math"
	"math/rand/v2"
	"net/http"
	"strings"

	"github.com/sluicehq/sluice/pkg/tokens"
)

// fakeDims is the length of the fake model's embeddings unless the request sets dimensions.
const fakeDims = 16

// embeddings answers POST /v1/embeddings: one unit vector per input, which depends only on
// the input, so the same text always embeds the same.
func (f *Fake) embeddings(ctx context.Context, req *Request) (*Result, error) {
	var in struct {
		Model          string          `json:"model"`
		Input          json.RawMessage `json:"input"`
		Dimensions     *int            `json:"dimensions"`
		EncodingFormat string          `json:"encoding_format"`
	}
	if err := json.Unmarshal(req.Body, &in); err != nil {
		return nil, invalidRequest(fakeName, "body is not a valid embeddings request: %v", err)
	}
	if req.Stream {
		return nil, invalidRequest(fakeName, "embeddings cannot be streamed")
	}
	inputs, cost, err := embeddingInputs(in.Input)
	if err != nil {
		return nil, invalidRequest(fakeName, "input: %v", err)
	}
	dims := fakeDims
	if in.Dimensions != nil {
		if dims = *in.Dimensions; dims < 1 || dims > 4096 {
			return nil, invalidRequest(fakeName, "dimensions must be 1..4096")
		}
	}
	if in.EncodingFormat != "" && in.EncodingFormat != "float" && in.EncodingFormat != "base64" {
		return nil, invalidRequest(fakeName, "encoding_format must be float or base64")
	}
	if err := sleep(ctx, f.latency); err != nil {
		return nil, &Error{Provider: fakeName, Err: err}
	}
	type embedding struct {
		Object    string `json:"object"`
		Index     int    `json:"index"`
		Embedding any    `json:"embedding"` // []float32, or base64 of little-endian float32s
	}
	data := make([]embedding, 0, len(inputs))
	for i, s := range inputs {
		vec := fakeVector(s, dims)
		var e any = vec
		if in.EncodingFormat == "base64" {
			b := make([]byte, 0, 4*len(vec))
			for _, x := range vec {
				b = binary.LittleEndian.AppendUint32(b, math.Float32bits(x))
			}
			e = base64.StdEncoding.EncodeToString(b)
		}
		data = append(data, embedding{Object: "embedding", Index: i, Embedding: e})
	}
	usage := tokens.Usage{PromptTokens: cost}
	body := mustMarshal(map[string]any{"object": "list", "data": data, "model": in.Model,
		"usage": map[string]int64{"prompt_tokens": cost, "total_tokens": cost}})
	return &Result{StatusCode: http.StatusOK, Body: body, Usage: &usage}, nil
}

// embeddingInputs reads input: a string, an array of strings, an array of token ids, or an
// array of arrays of token ids. It returns one text per input and their token count.
func embeddingInputs(raw json.RawMessage) ([]string, int64, error) {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return []string{s}, int64(len(strings.Fields(s))), nil
	}
	var ss []string
	if json.Unmarshal(raw, &ss) == nil && len(ss) > 0 {
		var n int64
		for _, s := range ss {
			n += int64(len(strings.Fields(s)))
		}
		return ss, n, nil
	}
	var ids []int64
	if json.Unmarshal(raw, &ids) == nil && len(ids) > 0 {
		return []string{fmt.Sprint(ids)}, int64(len(ids)), nil
	}
	var lists [][]int64
	if json.Unmarshal(raw, &lists) == nil && len(lists) > 0 {
		out := make([]string, 0, len(lists))
		var n int64
		for _, l := range lists {
			out = append(out, fmt.Sprint(l))
			n += int64(len(l))
		}
		return out, n, nil
	}
	return nil, 0, fmt.Errorf("must be a string, or a non-empty array of strings or of token ids")
}

// fakeVector is the unit vector of dims dimensions for s.
func fakeVector(s string, dims int) []float32 {
	h := fnv.New64a()
	_, _ = h.Write([]byte(s))
	r := rand.New(rand.NewPCG(h.Sum64(), uint64(dims)))
	v := make([]float32, dims)
	var norm float64
	for i := range v {
		x := r.Float64()*2 - 1
		v[i], norm = float32(x), norm+x*x
	}
	for i := range v {
		v[i] = float32(float64(v[i]) / math.Sqrt(norm))
	}
	return v
}
