package jobs

import (
	"errors"
	"fmt"
	"log/slog"
	neturl "net/url"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
)

// ConnOptions says how to reach and authenticate to NATS. Every field but URL and Name may
// be empty. File fields are paths; their contents are read when connecting (and, for the
// credentials and seeds, again at each reconnect, as nats.go does), never logged.
type ConnOptions struct {
	// URL is one or more comma-separated server URLs. A URL may carry a user and password
	// (nats://user:pass@host:4222) or a token; tls:// asks for TLS, verified against the
	// system's CAs unless TLSCA is set.
	URL  string
	Name string // the connection name the server shows (sluice-worker, sluice-ingress)
	// Creds is a NATS credentials file (a user JWT and its nkey seed, as `nsc` writes it),
	// for servers run in operator (decentralised JWT) mode.
	Creds string
	// NkeySeed is a file holding a user nkey seed (SU…), for servers that list nkey users.
	NkeySeed string
	// TLSCA is a PEM file of the CA(s) that signed the server's certificate. Setting it (or
	// TLSCert) turns TLS on whatever the URL's scheme.
	TLSCA string
	// TLSCert and TLSKey are a PEM client certificate and its key, for servers that
	// require mutual TLS. Both or neither.
	TLSCert, TLSKey string
}

// errNATSOptions is wrapped by every error about ConnOptions themselves (before dialling).
var errNATSOptions = errors.New("NATS connection options")

// natsOptions turns o into nats.go options. It fails, naming the setting but never a
// file's contents, if a pair is half given, two credentials are given, or a file is
// unreadable or unparsable.
func (o ConnOptions) natsOptions() ([]nats.Option, error) {
	var opts []nats.Option
	switch {
	case o.Creds != "" && o.NkeySeed != "":
		return nil, fmt.Errorf("%w: a credentials file and an nkey seed are both given; use one", errNATSOptions)
	case o.Creds != "":
		opts = append(opts, nats.UserCredentials(o.Creds))
	case o.NkeySeed != "":
		opt, err := nats.NkeyOptionFromSeed(o.NkeySeed)
		if err != nil {
			return nil, fmt.Errorf("%w: nkey seed file %s: %w", errNATSOptions, o.NkeySeed, err)
		}
		opts = append(opts, opt)
	}
	if (o.TLSCert == "") != (o.TLSKey == "") {
		return nil, fmt.Errorf("%w: a client certificate needs both its certificate and its key file", errNATSOptions)
	}
	if o.TLSCA != "" {
		opts = append(opts, nats.RootCAs(o.TLSCA))
	}
	if o.TLSCert != "" {
		opts = append(opts, nats.ClientCert(o.TLSCert, o.TLSKey))
	}
	return opts, nil
}

// Connect dials NATS with endless reconnects, logging connection changes. Its errors show
// the URLs with passwords and tokens masked, and file paths but never their contents.
func Connect(o ConnOptions, log *slog.Logger) (*nats.Conn, error) {
	auth, err := o.natsOptions()
	if err != nil {
		return nil, err
	}
	opts := append([]nats.Option{nats.Name(o.Name), nats.MaxReconnects(-1), nats.ReconnectWait(500 * time.Millisecond),
		nats.RetryOnFailedConnect(false), nats.Timeout(5 * time.Second),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) { log.Warn("nats disconnected", "err", err) }),
		nats.ReconnectHandler(func(*nats.Conn) { log.Info("nats reconnected") })}, auth...)
	nc, err := nats.Connect(o.URL, opts...)
	if _, ok := errors.AsType[*neturl.Error](err); ok {
		// url.Parse quotes the URL, or the part of it before a '#', and its reason quotes a
		// piece of it too: any of that may be a piece of the password.
		return nil, fmt.Errorf("connect to NATS at %s: a URL does not parse (percent-encode reserved characters in its user and password)",
			redactURLs(o.URL))
	}
	if err != nil {
		// nats.go's own errors name neither a password nor a seed; mask the URLs'
		// credentials anyway, wherever they appear.
		if msg := redactErr(err, o.URL); msg != err.Error() {
			return nil, fmt.Errorf("connect to NATS at %s: %s", redactURLs(o.URL), msg)
		}
		return nil, fmt.Errorf("connect to NATS at %s: %w", redactURLs(o.URL), err)
	}
	return nc, nil
}

// userinfo returns the user-information part of one URL (between "scheme://" and the
// last '@'), found by position rather than by parsing, so that a URL url.Parse refuses
// (a password with an unescaped '/') is masked too; "" if there is none.
func userinfo(u string) string {
	u = strings.TrimSpace(u)
	start := 0
	if i := strings.Index(u, "://"); i >= 0 {
		start = i + 3
	}
	at := strings.LastIndexByte(u, '@')
	if at < start {
		return ""
	}
	return u[start:at]
}

// redactErr is err's text with the credentials of every URL in urls masked.
func redactErr(err error, urls string) string {
	msg := err.Error()
	for p := range strings.SplitSeq(urls, ",") {
		info := userinfo(p)
		if info == "" {
			continue
		}
		msg = strings.ReplaceAll(msg, info, "xxxxx")
		if dec, derr := neturl.PathUnescape(info); derr == nil && dec != info {
			msg = strings.ReplaceAll(msg, dec, "xxxxx")
		}
		if _, pass, ok := strings.Cut(info, ":"); ok && pass != "" {
			msg = strings.ReplaceAll(msg, pass, "xxxxx")
			if dec, derr := neturl.PathUnescape(pass); derr == nil && dec != "" {
				msg = strings.ReplaceAll(msg, dec, "xxxxx")
			}
		}
	}
	return msg
}

// redactURLs is a comma-separated list of NATS URLs with their passwords (and tokens)
// masked, for error messages and logs. A URL that does not parse loses its whole user
// information.
func redactURLs(urls string) string {
	parts := strings.Split(urls, ",")
	for i, p := range parts {
		info := userinfo(p)
		if info == "" {
			continue
		}
		u, err := neturl.Parse(strings.TrimSpace(p))
		switch {
		case err != nil || u.User == nil:
			parts[i] = strings.Replace(p, info+"@", "xxxxx@", 1)
		default:
			if _, hasPass := u.User.Password(); hasPass {
				parts[i] = u.Redacted()
			} else { // a token alone
				u.User = neturl.User("xxxxx")
				parts[i] = u.String()
			}
		}
	}
	return strings.Join(parts, ",")
}
