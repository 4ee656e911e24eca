// Command devnats runs an embedded NATS server with JetStream enabled, for
// local development and CI on machines that have no nats-server installed.
//
//	go run ./cmd/devnats -addr 127.0.0.1:54222 -store .dev/nats
//
// It runs until SIGINT or SIGTERM, then shuts the server down cleanly.
// scripts/ensure-nats.sh builds and starts it when no other NATS answers.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

const defaultMaxPayload = 8 << 20 // 8 MiB, the largest payload nats-server accepts without warning

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stderr); err != nil {
		fmt.Fprintf(os.Stderr, "devnats: %v\n", err)
		stop()
		os.Exit(1)
	}
}

// config is the parsed command line.
type config struct {
	host       string
	port       int
	storeDir   string
	maxPayload int
	httpPort   int
	logFile    string
	quiet      bool
}

func parseFlags(args []string, stderr io.Writer) (config, error) {
	fs := flag.NewFlagSet("devnats", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("addr", "127.0.0.1:4222", "host:port to listen on for NATS clients (port 0 picks a free port)")
	store := fs.String("store", ".dev/nats", "JetStream store directory")
	maxPayload := fs.Int("max-payload", defaultMaxPayload, "maximum message payload in bytes")
	httpPort := fs.Int("http-port", 0, "monitoring HTTP port on the same host (0 disables it)")
	logFile := fs.String("log", "", "log to this file instead of stderr")
	quiet := fs.Bool("quiet", false, "disable server logging")
	if err := fs.Parse(args); err != nil {
		return config{}, err
	}
	if fs.NArg() > 0 {
		return config{}, fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	host, portStr, err := net.SplitHostPort(*addr)
	if err != nil {
		return config{}, fmt.Errorf("-addr %q: %w", *addr, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil || port < 0 || port > 65535 {
		return config{}, fmt.Errorf("-addr %q: invalid port", *addr)
	}
	if host == "" {
		host = "0.0.0.0"
	}
	if *maxPayload <= 0 || *maxPayload > server.MAX_PENDING_SIZE {
		return config{}, fmt.Errorf("-max-payload %d: must be in 1..%d", *maxPayload, server.MAX_PENDING_SIZE)
	}
	if *httpPort < 0 || *httpPort > 65535 {
		return config{}, fmt.Errorf("-http-port %d: invalid port", *httpPort)
	}
	if *store == "" {
		return config{}, errors.New("-store must not be empty")
	}
	storeDir, err := filepath.Abs(*store)
	if err != nil {
		return config{}, fmt.Errorf("-store %q: %w", *store, err)
	}
	return config{
		host:       host,
		port:       port,
		storeDir:   storeDir,
		maxPayload: *maxPayload,
		httpPort:   *httpPort,
		logFile:    *logFile,
		quiet:      *quiet,
	}, nil
}

// options translates the config into nats-server options.
func (c config) options() *server.Options {
	port := c.port
	if port == 0 {
		port = server.RANDOM_PORT // nats-server treats 0 as "default port 4222"
	}
	opts := &server.Options{
		ServerName: "sluice-devnats",
		Host:       c.host,
		Port:       port,
		JetStream:  true,
		StoreDir:   c.storeDir,
		MaxPayload: int32(c.maxPayload),
		NoSigs:     true, // we handle signals ourselves
		NoLog:      c.quiet,
		Logtime:    true,
		LogFile:    c.logFile,
	}
	if c.httpPort > 0 {
		opts.HTTPHost = c.host
		opts.HTTPPort = c.httpPort
	}
	return opts
}

// start creates, configures and starts the server and waits until it
// accepts client connections.
func start(c config) (*server.Server, error) {
	if err := os.MkdirAll(c.storeDir, 0o755); err != nil {
		return nil, fmt.Errorf("create store dir: %w", err)
	}
	ns, err := server.NewServer(c.options())
	if err != nil {
		return nil, fmt.Errorf("configure nats-server: %w", err)
	}
	ns.ConfigureLogger()
	ns.Start()
	if !ns.ReadyForConnections(30 * time.Second) {
		ns.Shutdown()
		ns.WaitForShutdown()
		return nil, fmt.Errorf("nats-server did not become ready on %s", net.JoinHostPort(c.host, strconv.Itoa(c.port)))
	}
	if !ns.JetStreamEnabled() {
		ns.Shutdown()
		ns.WaitForShutdown()
		return nil, errors.New("JetStream failed to start (see log)")
	}
	return ns, nil
}

// run starts the server and blocks until ctx is done or the server stops on
// its own.
func run(ctx context.Context, args []string, stderr io.Writer) error {
	c, err := parseFlags(args, stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	ns, err := start(c)
	if err != nil {
		return err
	}
	fmt.Fprintf(stderr, "devnats: listening on %s (JetStream store %s)\n", ns.ClientURL(), c.storeDir)

	stopped := make(chan struct{})
	go func() { // owned here: both ways out of the select below wait for stopped
		ns.WaitForShutdown()
		close(stopped)
	}()
	select {
	case <-ctx.Done():
		fmt.Fprintln(stderr, "devnats: shutting down")
		ns.Shutdown()
		<-stopped
		return nil
	case <-stopped:
		return errors.New("nats-server stopped unexpectedly")
	}
}
