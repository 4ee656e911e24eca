// Command worker runs Sluice relay jobs: a bounded pool that pulls only as many jobs from
// NATS JetStream as it has free slots, calls upstreams under deadlines, and records results,
// usage and cost in Postgres. `worker migrate` applies the database migrations and exits;
// `worker reseal [-batch N]` re-encrypts every sealed value under SLUICE_ENCRYPTION_KEY
// (opening old ones with SLUICE_ENCRYPTION_KEYS_OLD) and exits; `worker healthcheck` probes a
// running worker. Configuration is by environment variables.
package main

import (
	"cmp"
	"context"
	"flag"
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
	case "reseal":
		os.Exit(reseal(ctx, os.Args[2:], environ))
	case "healthcheck":
		if err := cli.Healthcheck(cmp.Or(environ["WORKER_ADDR"], ":9090")); err != nil {
			fmt.Fprintln(os.Stderr, "worker healthcheck:", err)
			os.Exit(1)
		}
		return
	case "":
	default:
		fmt.Fprintln(os.Stderr, "usage: worker [migrate|reseal [-batch N]|healthcheck]")
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

// reseal runs `worker reseal` and returns the exit status: 0 when every sealed value is
// under the current key, 1 when some could not be opened or the database failed, 2 for a
// bad configuration or flag.
func reseal(ctx context.Context, args []string, environ map[string]string) int {
	fs := flag.NewFlagSet("worker reseal", flag.ContinueOnError)
	batch := fs.Int("batch", 500, "rows per transaction")
	if err := fs.Parse(args); err != nil || fs.NArg() > 0 || *batch < 1 || *batch > 100_000 {
		fmt.Fprintln(os.Stderr, "usage: worker reseal [-batch N] (1..100000, default 500)")
		return cli.ExitConfig
	}
	var cfg worker.Config
	if err := cli.Load(&cfg, environ); err != nil {
		fmt.Fprintln(os.Stderr, "worker reseal:", err)
		return cli.ExitConfig
	}
	log := cli.Logger(os.Stderr, cfg.LogLevel)
	res, err := worker.Reseal(ctx, cfg, *batch, log)
	fmt.Printf("resealed %d, already current %d, unreadable %d\n", res.Resealed, res.Current, len(res.Unreadable))
	if err != nil {
		fmt.Fprintln(os.Stderr, "worker reseal:", err)
		return 1
	}
	return 0
}
