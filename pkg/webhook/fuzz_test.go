package webhook

import (
	"errors"
	"net/netip"
	"net/url"
	"strings"
	"testing"
)

// The fuzz test runs its seeds with every `go test`; scripts/fuzz.sh (`make test`, and longer
// `make fuzz`) explores with
//
//	go test -run='^$' -fuzz='^FuzzWebhookTarget$' -fuzztime=60s ./pkg/webhook/

// reservedV4 and reservedV6 are the ranges a tenant's webhook must never reach, listed here
// from IANA's special-purpose address registries (those not globally reachable) and the
// multicast and reserved blocks, independently of target.go. The IPv6 ranges that embed an
// IPv4 address (IPv4-mapped, NAT64 64:ff9b::/96, 6to4 2002::/16) are not here: they are
// judged by the address they embed (see reserved).
var (
	reservedV4 = prefixes("0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16",
		"172.16.0.0/12", "192.0.0.0/24", "192.0.2.0/24", "192.88.99.0/24", "192.168.0.0/16", "198.18.0.0/15",
		"198.51.100.0/24", "203.0.113.0/24", "224.0.0.0/4", "240.0.0.0/4")
	reservedV6 = prefixes("::/96" /* ::, ::1, IPv4-compatible */, "::ffff:0:0:0/96", /* IPv4-translated */
		"64:ff9b:1::/48", "100::/64", "2001::/23", "2001:db8::/32", "3fff::/20", "5f00::/16", "fc00::/7",
		"fe80::/10", "fec0::/10", "ff00::/8")
	nat64Prefix = netip.MustParsePrefix("64:ff9b::/96")
	sixToFourP  = netip.MustParsePrefix("2002::/16")
)

func prefixes(ss ...string) []netip.Prefix {
	ps := make([]netip.Prefix, len(ss))
	for i, s := range ss {
		ps[i] = netip.MustParsePrefix(s)
	}
	return ps
}

// reserved says why a webhook must not reach a, or "" if it may.
func reserved(a netip.Addr) string {
	// A zone picks the link for a link-local address and changes nothing else about where
	// a connection goes; netip.Prefix.Contains never matches a zoned address, so drop it.
	a = a.WithZone("").Unmap()
	in := func(ps []netip.Prefix) string {
		for _, p := range ps {
			if p.Contains(a) {
				return "in " + p.String()
			}
		}
		return ""
	}
	if a.Is4() {
		return in(reservedV4)
	}
	b := a.As16()
	switch {
	case nat64Prefix.Contains(a):
		if why := reserved(netip.AddrFrom4([4]byte(b[12:16]))); why != "" {
			return "NAT64 of an address " + why
		}
		return ""
	case sixToFourP.Contains(a):
		if why := reserved(netip.AddrFrom4([4]byte(b[2:6]))); why != "" {
			return "6to4 of an address " + why
		}
		return ""
	}
	return in(reservedV6)
}

// embeddings are the IPv6 forms that reach the IPv4 address v4: IPv4-mapped, NAT64 and 6to4
// (with any host bits after the embedded address).
func embeddings(v4 netip.Addr, tail [10]byte) []netip.Addr {
	b := v4.As4()
	var nat, six [16]byte
	copy(nat[:12], nat64Prefix.Addr().AsSlice()[:12])
	copy(nat[12:], b[:])
	six[0], six[1] = 0x20, 0x02
	copy(six[2:6], b[:])
	copy(six[6:], tail[:])
	return []netip.Addr{netip.AddrFrom16(v4.As16()), netip.AddrFrom16(nat), netip.AddrFrom16(six)}
}

// allowed reports whether a webhook may reach a: at submit (CheckURL on a URL naming it, a
// literal, so no DNS) and at dial (guardDial on the address connected to). The two must agree.
func allowed(t *testing.T, a netip.Addr) bool {
	t.Helper()
	dial := guardDial("tcp", netip.AddrPortFrom(a, 443).String(), nil)
	if dial != nil && !errors.Is(dial, ErrPrivateTarget) {
		t.Fatalf("guardDial(%s) = %v, want nil or ErrPrivateTarget", a, dial)
	}
	host := a.String()
	if a.Is6() {
		plain, zone, _ := strings.Cut(host, "%")
		host = "[" + plain
		if zone != "" {
			host += "%25" + url.PathEscape(zone)
		}
		host += "]"
	}
	raw := "https://" + host + "/hook"
	if u, err := url.Parse(raw); err != nil || u.Hostname() != a.String() {
		return dial == nil // no URL names this address (an odd zone): only the dial check applies
	}
	submit := CheckURL(t.Context(), raw, false)
	if (submit == nil) != (dial == nil) {
		t.Fatalf("%s: CheckURL(%s) = %v but guardDial = %v: submit and dial disagree", a, raw, submit, dial)
	}
	return submit == nil
}

// FuzzWebhookTarget (issue 9 item 13): no address that is loopback, private, link-local,
// multicast or otherwise special-purpose is ever allowed as a webhook target, however it is
// written — IPv4, IPv6, IPv4-mapped, zoned — and an IPv6 address that embeds an IPv4 one
// (IPv4-mapped, NAT64 64:ff9b::/96, 6to4 2002::/16) is judged exactly as the IPv4 address it
// reaches. Inputs that are not IP literals are skipped (they would need DNS).
func FuzzWebhookTarget(f *testing.F) {
	for _, s := range []string{
		// The ranges of issue 9 item 13, and their embeddings.
		"64:ff9b::a9fe:a9fe", "2002:a9fe:a9fe::", "2002:7f00:1:ffff::1", "0.0.0.0", "0.1.2.3", "198.18.0.1",
		"198.19.255.255", "240.0.0.1", "255.255.255.255",
		// Other special ranges and spellings.
		"::ffff:169.254.169.254", "::ffff:0:a9fe:a9fe", "::a9fe:a9fe", "::127.0.0.1", "64:ff9b:1::a9fe:a9fe",
		"2001:0:4136:e378:8000:63bf:3fff:fdd2", "2001:db8::1", "3fff::1", "5f00::1", "100::1", "fec0::1",
		"100.64.0.1", "192.0.0.170", "192.88.99.1", "127.0.0.1", "10.1.2.3", "172.31.255.255", "192.168.0.1",
		"169.254.169.254", "::1", "::", "fe80::1%eth0", "fd00::1", "ff02::1", "224.0.0.1",
		// Zones on addresses that are not link-local.
		"::%lo", "::1%1", "64:ff9b::a9fe:a9fe%eth0", "2002:7f00:1::%x", "::ffff:0:7f00:1%eth0", "2001:db8::1%0",
		// Public addresses, directly and embedded.
		"93.184.216.34", "8.8.8.8", "2606:4700:4700::1111", "::ffff:93.184.216.34", "64:ff9b::5db8:d822",
		"2002:5db8:d822::1", "198.20.0.0", "223.255.255.255",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, host string) {
		a, err := netip.ParseAddr(host)
		if err != nil {
			return
		}
		ok := allowed(t, a)
		if why := reserved(a); why != "" && ok {
			t.Fatalf("webhook target %s is allowed, but it is %s", a, why)
		}
		if v4 := a.WithZone("").Unmap(); v4.Is4() {
			var tail [10]byte
			copy(tail[:], a.AsSlice()) // some varying host bits for the 6to4 form
			for _, e := range embeddings(v4, tail) {
				if allowed(t, e) != ok {
					t.Fatalf("%s is allowed=%v but %s, which reaches it, is allowed=%v", v4, ok, e, !ok)
				}
			}
		}
	})
}
