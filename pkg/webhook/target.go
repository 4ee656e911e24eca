package webhook

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"syscall"
	"time"
)

// ErrPrivateTarget means a webhook URL points at a loopback, private or link-local address.
var ErrPrivateTarget = errors.New("webhook URL resolves to a loopback, private or link-local address")

// CheckURL validates a webhook URL at submit time: http or https, a host, and — unless
// allowPrivate — no address of the host in a loopback, private, link-local, CGNAT, multicast
// or unspecified range. Delivery checks the address actually dialled again (DNS can change).
func CheckURL(ctx context.Context, raw string, allowPrivate bool) error {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Hostname() == "" {
		return errors.New("webhook URL must be an absolute http or https URL")
	}
	if u.User != nil {
		return errors.New("webhook URL must not carry credentials")
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

var cgnat = netip.MustParsePrefix("100.64.0.0/10")

// publicAddr reports whether a is a routable public unicast address.
func publicAddr(a netip.Addr) bool {
	a = a.Unmap()
	return a.IsValid() && !a.IsLoopback() && !a.IsPrivate() && !a.IsLinkLocalUnicast() &&
		!a.IsLinkLocalMulticast() && !a.IsInterfaceLocalMulticast() && !a.IsMulticast() &&
		!a.IsUnspecified() && !cgnat.Contains(a)
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
