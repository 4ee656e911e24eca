// Command ingress is Sluice's HTTP API. It authenticates and validates requests, publishes
// each as a job to NATS JetStream, and answers with the worker's reply. Configuration is by
// environment variables only (see the README); `ingress healthcheck` probes a running one.
package main

import (
	"cmp"
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/sluicehq/sluice/internal/cli"
	"github.com/sluicehq/sluice/internal/ingress"
)

func main() {
	environ := cli.Environ()
	if len(os.Args) > 1 {
		if os.Args[1] != "healthcheck" {
			fmt.Fprintln(os.Stderr, "usage: ingress [healthcheck]")
			os.Exit(cli.ExitConfig)
		}
		if err := cli.Healthcheck(cmp.Or(environ["INGRESS_ADDR"], ":8080")); err != nil {
			fmt.Fprintln(os.Stderr, "ingress healthcheck:", err)
			os.Exit(1)
		}
		return
	}
	var cfg ingress.Config
	if err := cli.Load(&cfg, environ); err != nil {
		fmt.Fprintln(os.Stderr, "ingress:", err)
		os.Exit(cli.ExitConfig)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	log := cli.Logger(os.Stdout, cfg.LogLevel)
	cli.TuneGC(environ, log)
	if err := ingress.Run(ctx, cfg, log, ingress.Options{}); err != nil {
		fmt.Fprintln(os.Stderr, "ingress:", err)
		os.Exit(1)
	}
}
