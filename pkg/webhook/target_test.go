package webhook

import (
	"context"
	"errors"
	"net/netip"
	"testing"
)

// TestSSRFGuard_Issue9_13: every special-purpose range is refused, at submit and at dial,
// and an IPv6 address that embeds an IPv4 one (IPv4-mapped, NAT64, 6to4) is judged by the
// IPv4 address it reaches.
func TestSSRFGuard_Issue9_13(t *testing.T) {
	t.Parallel()
	tests := []struct {
		addr   string
		public bool
	}{
		// The ranges issue 9 item 13 found missing.
		{"64:ff9b::a9fe:a9fe", false}, // NAT64 of 169.254.169.254
		{"64:ff9b::7f00:1", false},    // NAT64 of 127.0.0.1
		{"64:ff9b::a00:1", false},     // NAT64 of 10.0.0.1
		{"2002:a9fe:a9fe::", false},   // 6to4 of 169.254.169.254
		{"2002:7f00:1::1", false},     // 6to4 of 127.0.0.1
		{"2002:c0a8:101::", false},    // 6to4 of 192.168.1.1
		{"0.0.0.0", false},
		{"0.1.2.3", false},
		{"198.18.0.1", false},
		{"198.19.255.255", false},
		{"240.0.0.1", false},
		{"255.255.255.255", false},
		// Other special ranges, and embeddings in general.
		{"::ffff:169.254.169.254", false},               // IPv4-mapped
		{"::ffff:0:a9fe:a9fe", false},                   // IPv4-translated
		{"::a9fe:a9fe", false},                          // IPv4-compatible
		{"64:ff9b:1::a9fe:a9fe", false},                 // local-use NAT64
		{"2001:0:4136:e378:8000:63bf:3fff:fdd2", false}, // Teredo
		{"2001:db8::1", false},
		{"100::1", false},
		{"fec0::1", false},
		{"100.64.0.1", false},
		{"192.0.0.170", false},
		{"192.0.2.1", false},
		{"192.88.99.1", false},
		{"198.51.100.1", false},
		{"203.0.113.1", false},
		{"127.0.0.1", false},
		{"10.1.2.3", false},
		{"172.16.0.1", false},
		{"192.168.0.1", false},
		{"169.254.169.254", false},
		{"::1", false},
		{"::", false},
		{"fe80::1", false},
		{"fd00::1", false},
		{"ff02::1", false},
		{"224.0.0.1", false},
		// Public addresses, directly and embedded, stay allowed.
		{"93.184.216.34", true},
		{"8.8.8.8", true},
		{"2606:4700:4700::1111", true},
		{"::ffff:93.184.216.34", true},
		{"64:ff9b::5db8:d822", true}, // NAT64 of 93.184.216.34 (DNS64 networks)
		{"2002:5db8:d822::1", true},  // 6to4 of 93.184.216.34
		{"198.17.255.255", true},
		{"198.20.0.0", true},
		{"239.255.255.255", false}, // multicast
		{"223.255.255.255", true},
	}
	for _, tt := range tests {
		t.Run(tt.addr, func(t *testing.T) {
			t.Parallel()
			a := netip.MustParseAddr(tt.addr)
			if got := publicAddr(a); got != tt.public {
				t.Errorf("publicAddr(%s) = %v, want %v", tt.addr, got, tt.public)
			}
			// At dial time, for the address actually connected to.
			err := guardDial("tcp", netip.AddrPortFrom(a, 443).String(), nil)
			if refused := errors.Is(err, ErrPrivateTarget); refused == tt.public {
				t.Errorf("guardDial(%s) = %v", tt.addr, err)
			}
			// At submit, for a URL naming the address (a literal: no DNS).
			host := tt.addr
			if a.Is6() {
				host = "[" + host + "]"
			}
			err = CheckURL(context.Background(), "https://"+host+"/hook", false)
			if refused := errors.Is(err, ErrPrivateTarget); refused == tt.public {
				t.Errorf("CheckURL(https://%s/hook) = %v", host, err)
			}
		})
	}
}

// TestWebhookURLPort_Issue17_4: a port outside 1..65535 is refused at submit, even when
// private targets are allowed (it could only fail, retried for a day).
func TestWebhookURLPort_Issue17_4(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		url string
		ok  bool
	}{
		{"http://127.0.0.1:99999/", false},
		{"http://127.0.0.1:0/", false},
		{"http://127.0.0.1:65536/", false},
		{"http://[::1]:70000/", false},
		{"http://[::1/", false},
		{"http:///hook", false},
		{"http:hook", false},
		{"http://u:p@127.0.0.1/", false},
		{"ftp://127.0.0.1/", false},
		{"http://127.0.0.1:65535/", true},
		{"http://127.0.0.1/", true},
		{"https://[::1]:8443/hook", true},
	} {
		err := CheckURL(context.Background(), tt.url, true)
		if (err == nil) != tt.ok {
			t.Errorf("CheckURL(%q) = %v, want ok=%v", tt.url, err, tt.ok)
		}
	}
}
