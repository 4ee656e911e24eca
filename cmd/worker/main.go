// Command worker runs Sluice relay jobs: a bounded pool that pulls only as many jobs from
// NATS JetStream as it has free slots, calls upstreams under deadlines, and records results,
// usage and cost in Postgres. `worker migrate` applies the database migrations and exits;
// `worker healthcheck` probes a running worker. Configuration is by environment variables.
package main

import (
	"cmp"
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/sluicehq/sluice/internal/cli"
	"github.com/sluicehq/sluice/internal/worker"
)

func main() {
	sub := ""
	if len(os.Args) > 1 {
		sub = os.Args[1]
	}
	environ := cli.Environ()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	switch sub {
	case "migrate":
		url := environ["DATABASE_URL"]
		if url == "" {
			fmt.Fprintln(os.Stderr, "worker migrate: DATABASE_URL is required")
			os.Exit(cli.ExitConfig)
		}
		if err := worker.Migrate(ctx, url); err != nil {
			fmt.Fprintln(os.Stderr, "worker migrate:", err)
			os.Exit(1)
		}
		fmt.Println("migrations applied")
		return
	case "healthcheck":
		if err := cli.Healthcheck(cmp.Or(environ["WORKER_ADDR"], ":9090")); err != nil {
			fmt.Fprintln(os.Stderr, "worker healthcheck:", err)
			os.Exit(1)
		}
		return
	case "":
	default:
		fmt.Fprintln(os.Stderr, "usage: worker [migrate|healthcheck]")
		os.Exit(cli.ExitConfig)
	}
	var cfg worker.Config
	if err := cli.Load(&cfg, environ); err != nil {
		fmt.Fprintln(os.Stderr, "worker:", err)
		os.Exit(cli.ExitConfig)
	}
	log := cli.Logger(os.Stdout, cfg.LogLevel)
	cli.TuneGC(environ, log)
	if err := worker.Run(ctx, cfg, log, worker.Options{}); err != nil {
		fmt.Fprintln(os.Stderr, "worker:", err)
		os.Exit(1)
	}
}
