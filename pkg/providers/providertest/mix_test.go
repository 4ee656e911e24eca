package providertest

import (
	"math"
	"math/rand/v2"
	"testing"
)

func TestParseMix(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		mix     string
		want    []Mode
		wantErr bool
	}{
		{"empty", "", nil, false},
		{"blank", "  ", nil, false},
		{"one", "ok=1", []Mode{ModeOK}, false},
		{"spaces", " ok = 60 , 429=10 ", []Mode{ModeOK, Mode429}, false},
		{"zero weight kept", "ok=1,hang=0", []Mode{ModeOK, ModeHang}, false},
		{"unknown mode", "ok=1,teapot=2", nil, true},
		{"missing weight", "ok", nil, true},
		{"negative weight", "ok=-1", nil, true},
		{"fractional weight", "ok=1.5", nil, true},
		{"repeated mode", "ok=1,ok=2", nil, true},
		{"all zero", "ok=0,429=0", nil, true},
		{"trailing comma", "ok=1,", nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			m, err := parseMix(tt.mix)
			if (err != nil) != tt.wantErr {
				t.Fatalf("parseMix(%q) error = %v, want error %v", tt.mix, err, tt.wantErr)
			}
			if len(m.modes) != len(tt.want) {
				t.Fatalf("parseMix(%q) modes = %v, want %v", tt.mix, m.modes, tt.want)
			}
			for i := range tt.want {
				if m.modes[i] != tt.want[i] {
					t.Errorf("parseMix(%q) modes = %v, want %v", tt.mix, m.modes, tt.want)
				}
			}
		})
	}
}

func TestMixDeterministic(t *testing.T) {
	t.Parallel()
	m, err := parseMix("ok=60,429=10,503=8,504=4,reset=5,truncate=5,midstream=3,drip=3,hang=2")
	if err != nil {
		t.Fatal(err)
	}
	draw := func(seed uint64) []Mode {
		r := rand.New(rand.NewPCG(seed, 0))
		out := make([]Mode, 200)
		for i := range out {
			out[i] = m.pick(r)
		}
		return out
	}
	a, b, c := draw(7), draw(7), draw(8)
	same := func(x, y []Mode) bool {
		for i := range x {
			if x[i] != y[i] {
				return false
			}
		}
		return true
	}
	if !same(a, b) {
		t.Errorf("two draws with seed 7 differ:\n%v\n%v", a, b)
	}
	if same(a, c) {
		t.Errorf("draws with seeds 7 and 8 are identical")
	}
	if got := (mix{}).pick(rand.New(rand.NewPCG(1, 0))); got != ModeOK {
		t.Errorf("zero mix picked %q, want %q", got, ModeOK)
	}
}

func TestMixWeights(t *testing.T) {
	t.Parallel()
	weights := map[Mode]int{ModeOK: 60, Mode429: 10, Mode503: 8, Mode504: 4, ModeReset: 5,
		ModeTruncate: 5, ModeMidstream: 3, ModeDrip: 3, ModeHang: 2, ModeBig: 0}
	m, err := parseMix("ok=60,429=10,503=8,504=4,reset=5,truncate=5,midstream=3,drip=3,hang=2,big=0")
	if err != nil {
		t.Fatal(err)
	}
	const draws = 1000
	r := rand.New(rand.NewPCG(42, 0))
	got := map[Mode]int{}
	for range draws {
		got[m.pick(r)]++
	}
	for mode, w := range weights {
		p := float64(w) / 100
		want := p * draws
		tolerance := 5*math.Sqrt(draws*p*(1-p)) + 1 // five standard deviations
		if math.Abs(float64(got[mode])-want) > tolerance {
			t.Errorf("mode %q drawn %d times in %d, want %.0f±%.0f", mode, got[mode], draws, want, tolerance)
		}
	}
}
