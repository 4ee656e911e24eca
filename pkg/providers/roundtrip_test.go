package providers_test

import (
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/sluicehq/sluice/pkg/providers"
)

// TestUpstreamRedirectNotFollowed_Issue10: through NewHTTPClient's client, which the
// providers call without http.Client.Do, an upstream's redirect is not followed (the key
// would go with it): the call fails with the upstream's 307, and the target is never asked.
func TestUpstreamRedirectNotFollowed_Issue10(t *testing.T) {
	t.Parallel()
	var followed atomic.Int64
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		followed.Add(1)
		_, _ = w.Write([]byte(`{"object":"list","data":[]}`))
	}))
	defer target.Close()
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, target.URL+r.URL.Path, http.StatusTemporaryRedirect)
	}))
	defer up.Close()
	p := providers.NewOpenAI(providers.NewHTTPClient(providers.ClientConfig{}), up.URL+"/v1", testKey, providers.Limits{})
	_, err := p.Do(t.Context(), &providers.Request{Endpoint: "/v1/embeddings", Body: []byte(`{"model":"m","input":"x"}`)}, nil)
	var perr *providers.Error
	if !errors.As(err, &perr) || perr.StatusCode != http.StatusTemporaryRedirect {
		t.Fatalf("err = %v; want the upstream's 307", err)
	}
	if n := followed.Load(); n != 0 {
		t.Fatalf("the redirect's target was asked %d times", n)
	}
}

// TestUpstreamNetworkErrorIsURLError_Issue10: a call that cannot connect fails as Do's did,
// with a *url.Error naming the operation, so that it is told to the client by its kind only.
func TestUpstreamNetworkErrorIsURLError_Issue10(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close() // nothing listens there now: the dial is refused
	p := providers.NewOpenAI(providers.NewHTTPClient(providers.ClientConfig{}), "http://"+addr+"/v1", testKey, providers.Limits{})
	_, err = p.Do(t.Context(), &providers.Request{Endpoint: "/v1/embeddings", Body: []byte(`{"model":"m","input":"x"}`)}, nil)
	var perr *providers.Error
	var uerr *url.Error
	if !errors.As(err, &perr) || !errors.As(err, &uerr) || uerr.Op != "Post" || uerr.URL != "http://"+addr+"/v1/embeddings" {
		t.Fatalf("err = %#v; want a providers.Error over a *url.Error of the Post", err)
	}
	if got := perr.Error(); got != "openai upstream: no response: connection refused" {
		t.Errorf("told as %q", got)
	}
}

// TestUpstreamSchemeMismatch_Issue10: an https:// channel whose server speaks plain HTTP is
// told to the operator as Do told it, not as a TLS record error.
func TestUpstreamSchemeMismatch_Issue10(t *testing.T) {
	t.Parallel()
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer up.Close()
	base := strings.Replace(up.URL, "http://", "https://", 1) + "/v1"
	p := providers.NewOpenAI(providers.NewHTTPClient(providers.ClientConfig{}), base, testKey, providers.Limits{})
	_, err := p.Do(t.Context(), &providers.Request{Endpoint: "/v1/embeddings", Body: []byte(`{"model":"m","input":"x"}`)}, nil)
	var perr *providers.Error
	if !errors.As(err, &perr) || !errors.Is(err, http.ErrSchemeMismatch) {
		t.Fatalf("err = %v; want http.ErrSchemeMismatch", err)
	}
	if d := perr.Detail(); !strings.Contains(d, "server gave HTTP response to HTTPS client") {
		t.Errorf("logged as %q", d)
	}
}
