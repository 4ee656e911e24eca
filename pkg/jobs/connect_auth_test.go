package jobs_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nkeys"

	"github.com/sluicehq/sluice/pkg/jobs"
)

// startNATS runs an embedded server with opts (address and logging filled in) and returns
// its host:port.
func startNATS(t *testing.T, opts *server.Options) string {
	t.Helper()
	opts.Host, opts.Port, opts.NoLog, opts.NoSigs = "127.0.0.1", -1, true, true
	ns, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	go ns.Start()
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats server not ready")
	}
	return ns.Addr().String()
}

// connect is jobs.Connect with o; it closes the connection at once and returns the error.
func connect(t *testing.T, o jobs.ConnOptions) error {
	t.Helper()
	o.Name = "test"
	nc, err := jobs.Connect(o, slog.New(slog.DiscardHandler))
	if err == nil {
		nc.Close()
	}
	return err
}

// refused checks that o is refused and that the error shows none of secrets.
func refused(t *testing.T, what string, o jobs.ConnOptions, secrets ...string) {
	t.Helper()
	err := connect(t, o)
	if err == nil {
		t.Errorf("%s: connected, want refused", what)
		return
	}
	for _, s := range secrets {
		if strings.Contains(err.Error(), s) {
			t.Errorf("%s: the error shows a secret: %v", what, err)
		}
	}
}

// pki is a private CA with a server certificate for 127.0.0.1 and a client certificate,
// as PEM files in a temporary directory.
type pki struct {
	CA, ServerCert, ServerKey, ClientCert, ClientKey string
}

func newPKI(t *testing.T) pki {
	t.Helper()
	dir := t.TempDir()
	write := func(name, typ string, der []byte) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	newKey := func() *ecdsa.PrivateKey {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	serial := int64(0)
	template := func(cn string) *x509.Certificate {
		serial++
		return &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: cn},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour)}
	}
	caKey := newKey()
	caTmpl := template("sluice test CA")
	caTmpl.IsCA, caTmpl.BasicConstraintsValid = true, true
	caTmpl.KeyUsage = x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	leaf := func(name string, usage x509.ExtKeyUsage) (certPath, keyPath string) {
		k := newKey()
		tmpl := template(name)
		tmpl.KeyUsage = x509.KeyUsageDigitalSignature
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{usage}
		if usage == x509.ExtKeyUsageServerAuth {
			tmpl.IPAddresses, tmpl.DNSNames = []net.IP{net.IPv4(127, 0, 0, 1)}, []string{"localhost"}
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &k.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		kder, err := x509.MarshalPKCS8PrivateKey(k)
		if err != nil {
			t.Fatal(err)
		}
		return write(name+".pem", "CERTIFICATE", der), write(name+"-key.pem", "PRIVATE KEY", kder)
	}
	p := pki{CA: write("ca.pem", "CERTIFICATE", caDER)}
	p.ServerCert, p.ServerKey = leaf("server", x509.ExtKeyUsageServerAuth)
	p.ClientCert, p.ClientKey = leaf("client", x509.ExtKeyUsageClientAuth)
	return p
}

// startTLSNATS runs a server with p's server certificate; verify requires client
// certificates signed by p's CA.
func startTLSNATS(t *testing.T, p pki, verify bool) string {
	t.Helper()
	tc, err := server.GenTLSConfig(&server.TLSConfigOpts{CertFile: p.ServerCert, KeyFile: p.ServerKey, CaFile: p.CA,
		Verify: verify})
	if err != nil {
		t.Fatal(err)
	}
	return startNATS(t, &server.Options{TLS: true, TLSVerify: verify, TLSConfig: tc, TLSTimeout: 10})
}

// TestConnectTLS_Issue9_5: NATS_TLS_CA makes the connection TLS, verified against a private
// CA; a server whose certificate another CA signed is refused, and so is a client that
// asks for no TLS.
func TestConnectTLS_Issue9_5(t *testing.T) {
	t.Parallel()
	p, other := newPKI(t), newPKI(t)
	addr := startTLSNATS(t, p, false)
	if err := connect(t, jobs.ConnOptions{URL: "nats://" + addr, TLSCA: p.CA}); err != nil {
		t.Fatalf("connect over TLS with the server's CA: %v", err)
	}
	if err := connect(t, jobs.ConnOptions{URL: "tls://" + addr, TLSCA: p.CA}); err != nil {
		t.Fatalf("connect to tls:// with the server's CA: %v", err)
	}
	refused(t, "another CA", jobs.ConnOptions{URL: "nats://" + addr, TLSCA: other.CA})
	refused(t, "system CAs", jobs.ConnOptions{URL: "tls://" + addr})
	refused(t, "no TLS", jobs.ConnOptions{URL: "nats://" + addr})
	refused(t, "unreadable CA file", jobs.ConnOptions{URL: "nats://" + addr, TLSCA: filepath.Join(t.TempDir(), "none.pem")})
}

// TestConnectMutualTLS_Issue9_5: with NATS_TLS_CERT and NATS_TLS_KEY the client shows its
// certificate to a server that requires one; a client without one, or with one another CA
// signed, is refused; half a pair is refused before dialling.
func TestConnectMutualTLS_Issue9_5(t *testing.T) {
	t.Parallel()
	p, other := newPKI(t), newPKI(t)
	addr := startTLSNATS(t, p, true)
	if err := connect(t, jobs.ConnOptions{URL: "nats://" + addr, TLSCA: p.CA, TLSCert: p.ClientCert, TLSKey: p.ClientKey}); err != nil {
		t.Fatalf("connect with a client certificate: %v", err)
	}
	refused(t, "no client certificate", jobs.ConnOptions{URL: "nats://" + addr, TLSCA: p.CA})
	refused(t, "a client certificate of another CA",
		jobs.ConnOptions{URL: "nats://" + addr, TLSCA: p.CA, TLSCert: other.ClientCert, TLSKey: other.ClientKey})
	refused(t, "a certificate without its key", jobs.ConnOptions{URL: "nats://" + addr, TLSCA: p.CA, TLSCert: p.ClientCert})
	keyPEM, err := os.ReadFile(p.ClientKey)
	if err != nil {
		t.Fatal(err)
	}
	// The client key given as the certificate: the error must not quote the key's PEM.
	refused(t, "a key as the certificate",
		jobs.ConnOptions{URL: "nats://" + addr, TLSCA: p.CA, TLSCert: p.ClientKey, TLSKey: p.ClientKey},
		string(pemBody(keyPEM)))
}

// pemBody is the first base64 line of a PEM block, enough to spot it in a message.
func pemBody(b []byte) []byte {
	lines := strings.Split(string(b), "\n")
	if len(lines) < 2 {
		return b
	}
	return []byte(lines[1])
}

// writeSecret writes data to a 0600 file in a temporary directory and returns its path.
func writeSecret(t *testing.T, name string, data []byte) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func newUserKey(t *testing.T) (pub string, seed []byte, kp nkeys.KeyPair) {
	t.Helper()
	kp, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	if pub, err = kp.PublicKey(); err != nil {
		t.Fatal(err)
	}
	if seed, err = kp.Seed(); err != nil {
		t.Fatal(err)
	}
	return pub, seed, kp
}

// TestConnectNkey_Issue9_5: NATS_NKEY names a user seed file; a server that lists the
// seed's public key lets it in, and refuses another seed and no credential at all,
// without the seed in the error.
func TestConnectNkey_Issue9_5(t *testing.T) {
	t.Parallel()
	pub, seed, _ := newUserKey(t)
	_, otherSeed, _ := newUserKey(t)
	addr := startNATS(t, &server.Options{Nkeys: []*server.NkeyUser{{Nkey: pub}}})
	if err := connect(t, jobs.ConnOptions{URL: "nats://" + addr, NkeySeed: writeSecret(t, "user.nk", seed)}); err != nil {
		t.Fatalf("connect with the listed nkey: %v", err)
	}
	refused(t, "another nkey", jobs.ConnOptions{URL: "nats://" + addr, NkeySeed: writeSecret(t, "other.nk", otherSeed)},
		string(otherSeed))
	refused(t, "no credential", jobs.ConnOptions{URL: "nats://" + addr})
	refused(t, "not a seed", jobs.ConnOptions{URL: "nats://" + addr, NkeySeed: writeSecret(t, "pub.nk", []byte(pub))})
}

// TestConnectCreds_Issue9_5: NATS_CREDS names a credentials file (a user JWT and its seed)
// for a server in operator mode; a user JWT signed by an account the server does not know,
// or the right JWT with another user's seed, is refused, without the seed in the error.
func TestConnectCreds_Issue9_5(t *testing.T) {
	t.Parallel()
	operator, err := nkeys.CreateOperator()
	if err != nil {
		t.Fatal(err)
	}
	opPub, err := operator.PublicKey()
	if err != nil {
		t.Fatal(err)
	}
	opJWT, err := jwt.NewOperatorClaims(opPub).Encode(operator)
	if err != nil {
		t.Fatal(err)
	}
	opClaims, err := jwt.DecodeOperatorClaims(opJWT)
	if err != nil {
		t.Fatal(err)
	}
	newAccount := func() (nkeys.KeyPair, string, string) {
		kp, err := nkeys.CreateAccount()
		if err != nil {
			t.Fatal(err)
		}
		pub, err := kp.PublicKey()
		if err != nil {
			t.Fatal(err)
		}
		tok, err := jwt.NewAccountClaims(pub).Encode(operator)
		if err != nil {
			t.Fatal(err)
		}
		return kp, pub, tok
	}
	account, accPub, accJWT := newAccount()
	stranger, _, _ := newAccount() // signed by the operator, but not in the server's resolver
	resolver := &server.MemAccResolver{}
	if err := resolver.Store(accPub, accJWT); err != nil {
		t.Fatal(err)
	}
	addr := startNATS(t, &server.Options{TrustedOperators: []*jwt.OperatorClaims{opClaims}, AccountResolver: resolver})

	creds := func(signer nkeys.KeyPair, userPub string, seed []byte) string {
		tok, err := jwt.NewUserClaims(userPub).Encode(signer)
		if err != nil {
			t.Fatal(err)
		}
		file, err := jwt.FormatUserConfig(tok, seed)
		if err != nil {
			t.Fatal(err)
		}
		return writeSecret(t, "user.creds", file)
	}
	pub, seed, _ := newUserKey(t)
	if err := connect(t, jobs.ConnOptions{URL: "nats://" + addr, Creds: creds(account, pub, seed)}); err != nil {
		t.Fatalf("connect with a valid credentials file: %v", err)
	}
	pub2, seed2, _ := newUserKey(t)
	refused(t, "a user of an unknown account", jobs.ConnOptions{URL: "nats://" + addr, Creds: creds(stranger, pub2, seed2)},
		string(seed2))
	// FormatUserConfig refuses a seed that does not match the JWT: swap it in afterwards.
	_, seed3, _ := newUserKey(t)
	good, err := os.ReadFile(creds(account, pub, seed))
	if err != nil {
		t.Fatal(err)
	}
	swapped := writeSecret(t, "swapped.creds", []byte(strings.Replace(string(good), string(seed), string(seed3), 1)))
	refused(t, "the JWT with another user's seed", jobs.ConnOptions{URL: "nats://" + addr, Creds: swapped}, string(seed3))
	refused(t, "no credential", jobs.ConnOptions{URL: "nats://" + addr})
	refused(t, "creds and nkey both", jobs.ConnOptions{URL: "nats://" + addr, Creds: creds(account, pub, seed),
		NkeySeed: writeSecret(t, "user.nk", seed)}, string(seed))
}
