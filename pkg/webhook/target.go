package webhook

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"strconv"
	"syscall"
	"time"
)

// ErrPrivateTarget means a webhook URL points at a loopback, private or link-local address.
var ErrPrivateTarget = errors.New("webhook URL resolves to a loopback, private or link-local address")

// CheckURL validates a webhook URL at submit time: http or https, a host, a port (if
// given) in 1..65535, no credentials, and — unless allowPrivate — no address of the host
// that is not public unicast (see publicAddr). Delivery checks the address actually dialled
// again (DNS can change).
func CheckURL(ctx context.Context, raw string, allowPrivate bool) error {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Opaque != "" || u.Hostname() == "" {
		return errors.New("webhook URL must be an absolute http or https URL")
	}
	if u.User != nil {
		return errors.New("webhook URL must not carry credentials")
	}
	if p := u.Port(); p != "" {
		// url.Parse takes any digits as a port; a delivery to port 99999 could only fail,
		// retried for a day.
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return errors.New("webhook URL has an invalid port (want 1 to 65535)")
		}
	}
	if allowPrivate {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	addrs, err := net.DefaultResolver.LookupNetIP(ctx, "ip", u.Hostname())
	if err != nil {
		return fmt.Errorf("webhook host %q does not resolve", u.Hostname())
	}
	for _, a := range addrs {
		if !publicAddr(a) {
			return ErrPrivateTarget
		}
	}
	return nil
}

// nonPublic are the special-purpose ranges (IANA's registries) that the netip predicates
// in publicAddr do not cover and that must not be reachable from a tenant's webhook.
var nonPublic = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),       // "this network"; 0.0.0.0 reaches the local host
	netip.MustParsePrefix("100.64.0.0/10"),   // carrier-grade NAT, shared address space
	netip.MustParsePrefix("192.0.0.0/24"),    // IETF protocol assignments
	netip.MustParsePrefix("192.0.2.0/24"),    // TEST-NET-1
	netip.MustParsePrefix("192.88.99.0/24"),  // 6to4 relay anycast
	netip.MustParsePrefix("198.18.0.0/15"),   // benchmarking
	netip.MustParsePrefix("198.51.100.0/24"), // TEST-NET-2
	netip.MustParsePrefix("203.0.113.0/24"),  // TEST-NET-3
	netip.MustParsePrefix("240.0.0.0/4"),     // reserved, and 255.255.255.255 broadcast
	netip.MustParsePrefix("::/96"),           // IPv4-compatible (deprecated), ::, ::1
	netip.MustParsePrefix("::ffff:0:0:0/96"), // IPv4-translated (SIIT)
	netip.MustParsePrefix("64:ff9b:1::/48"),  // local-use NAT64
	netip.MustParsePrefix("100::/64"),        // discard-only
	netip.MustParsePrefix("2001::/23"),       // IETF protocol assignments, Teredo (2001::/32) among them
	netip.MustParsePrefix("2001:db8::/32"),   // documentation
	netip.MustParsePrefix("3fff::/20"),       // documentation (RFC 9637)
	netip.MustParsePrefix("5f00::/16"),       // SRv6 segment identifiers (RFC 9602)
	netip.MustParsePrefix("fec0::/10"),       // site-local (deprecated)
}

var (
	nat64     = netip.MustParsePrefix("64:ff9b::/96") // well-known NAT64: the IPv4 address is the last 32 bits
	sixToFour = netip.MustParsePrefix("2002::/16")    // 6to4: the IPv4 address is bits 16..47
)

// publicAddr reports whether a is a routable public unicast address. An IPv6 address that
// embeds an IPv4 one — IPv4-mapped, NAT64 (64:ff9b::/96) or 6to4 (2002::/16) — is judged
// by the IPv4 address it reaches: 64:ff9b::a9fe:a9fe and 2002:a9fe:a9fe:: are
// 169.254.169.254.
func publicAddr(a netip.Addr) bool {
	// A zone ("%eth0") only picks the link of a link-local address, which is refused anyway;
	// netip.Prefix.Contains never matches a zoned address, so judge the address without it.
	a = a.WithZone("").Unmap()
	if a.Is6() {
		b := a.As16()
		switch {
		case nat64.Contains(a):
			return publicAddr(netip.AddrFrom4([4]byte(b[12:16])))
		case sixToFour.Contains(a):
			return publicAddr(netip.AddrFrom4([4]byte(b[2:6])))
		}
	}
	if !a.IsValid() || a.IsLoopback() || a.IsPrivate() || a.IsLinkLocalUnicast() || a.IsLinkLocalMulticast() ||
		a.IsInterfaceLocalMulticast() || a.IsMulticast() || a.IsUnspecified() {
		return false
	}
	for _, p := range nonPublic {
		if p.Contains(a) {
			return false
		}
	}
	return true
}

// guardDial refuses, at connect time, any address that is not public: the check that
// survives DNS rebinding between submit and delivery.
func guardDial(_, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return err
	}
	if !publicAddr(ap.Addr()) {
		return ErrPrivateTarget
	}
	return nil
}
