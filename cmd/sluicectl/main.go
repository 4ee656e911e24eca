// Command sluicectl is a small client for Sluice's admin API.
//
//	sluicectl [-url URL] [-token TOKEN] <resource> <verb> [flags]
//
//	keys     create|list|get|update|revoke
//	teams    create|list|get|update|delete
//	channels create|list|get|update|delete
//	prices   list|set
//	usage    [-key KEY_ID] [-team TEAM_ID] [-from T] [-to T] [-group-by model|day|key|team] [-csv]
//	batches  list [-key KEY_ID] [-limit N] | show ID | cancel ID
//
// The URL defaults to $SLUICE_URL or http://127.0.0.1:8080, the token to $SLUICE_ADMIN_TOKEN.
// Answers are printed as indented JSON; API errors go to stderr with exit status 1.
package main

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/sluicehq/sluice/pkg/httpbody"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "sluicectl:", err)
		var u usageError
		if errors.As(err, &u) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}

type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

const usage = `usage: sluicectl [-url URL] [-token TOKEN] <resource> <verb> [flags]
  keys create -name N [-budget USD] [-models a,b] [-budget-period daily|weekly|monthly|none]
              [-rpm N] [-tpm N] [-max-concurrency N] [-expires RFC3339]
              [-team TEAM_ID|none] [-cache-ttl SECONDS]
  keys list | keys get ID | keys update ID [same flags as create] | keys revoke ID
  teams create -name N [-budget USD] [-budget-period P] [-models a,b] [-rpm N] [-tpm N]
  teams list | teams get ID | teams update ID [same flags as create] | teams delete ID
  channels create -name N -provider openai|azure|anthropic|gemini|fake -base-url U [-api-key K]
                  -models a,b [-map alias=model,...] [-priority N] [-weight N] [-disabled]
  channels list | channels get ID | channels update ID [same flags] | channels delete ID
  prices list | prices set MODEL INPUT_USD_PER_1M OUTPUT_USD_PER_1M
  usage [-key ID] [-team ID] [-from T] [-to T] [-group-by model|day|key|team] [-csv]
  batches list [-key ID] [-limit N] | batches show ID | batches cancel ID`

func run(ctx context.Context, args []string, out io.Writer) error {
	global := flag.NewFlagSet("sluicectl", flag.ContinueOnError)
	global.SetOutput(io.Discard)
	base := global.String("url", cmp.Or(os.Getenv("SLUICE_URL"), "http://127.0.0.1:8080"), "ingress URL")
	token := global.String("token", os.Getenv("SLUICE_ADMIN_TOKEN"), "admin token")
	if err := global.Parse(args); err != nil {
		return usageError{usage}
	}
	rest := global.Args()
	if len(rest) < 1 {
		return usageError{usage}
	}
	c := &client{base: strings.TrimSuffix(*base, "/"), token: *token, http: &http.Client{Timeout: 30 * time.Second}}
	if c.token == "" {
		return usageError{"set SLUICE_ADMIN_TOKEN or pass -token"}
	}
	resource, verb := rest[0], ""
	if len(rest) > 1 {
		verb = rest[1]
	}
	var tail []string
	if len(rest) > 2 {
		tail = rest[2:]
	}
	var (
		v   any
		err error
	)
	switch resource + " " + verb {
	case "keys list", "keys get", "keys revoke", "keys create", "keys update":
		v, err = c.crud(ctx, "/admin/v1/keys", verb, "revoke", tail, keyFlags)
	case "teams list", "teams get", "teams delete", "teams create", "teams update":
		// A team's flags are the key flags of the same names (the API refuses the others).
		v, err = c.crud(ctx, "/admin/v1/teams", verb, "delete", tail, keyFlags)
	case "channels list", "channels get", "channels delete", "channels create", "channels update":
		v, err = c.crud(ctx, "/admin/v1/channels", verb, "delete", tail, channelFlags)
	case "prices list":
		v, err = c.do(ctx, http.MethodGet, "/admin/v1/prices", nil)
	case "batches list", "batches show", "batches cancel":
		v, err = c.batches(ctx, verb, tail)
	case "prices set":
		if len(tail) != 3 {
			return usageError{"prices set MODEL INPUT_USD_PER_1M OUTPUT_USD_PER_1M"}
		}
		var in, outp float64
		if _, e := fmt.Sscan(tail[1], &in); e != nil {
			return usageError{"input price: " + e.Error()}
		}
		if _, e := fmt.Sscan(tail[2], &outp); e != nil {
			return usageError{"output price: " + e.Error()}
		}
		v, err = c.do(ctx, http.MethodPut, "/admin/v1/prices/"+url.PathEscape(tail[0]),
			map[string]any{"input_usd_per_1m": in, "output_usd_per_1m": outp})
	default:
		if resource != "usage" {
			return usageError{usage}
		}
		fs := flag.NewFlagSet("usage", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		key := fs.String("key", "", "key id")
		from := fs.String("from", "", "from (Unix seconds or RFC 3339)")
		to := fs.String("to", "", "to")
		team := fs.String("team", "", "team id")
		group := fs.String("group-by", "model", "model, day, key or team")
		csvOut := fs.Bool("csv", false, "print CSV")
		if e := fs.Parse(rest[1:]); e != nil {
			return usageError{usage}
		}
		q := url.Values{"group_by": {*group}}
		for k, val := range map[string]string{"key_id": *key, "team_id": *team, "from": *from, "to": *to} {
			if val != "" {
				q.Set(k, val)
			}
		}
		if *csvOut {
			q.Set("format", "csv")
			return c.raw(ctx, "/admin/v1/usage?"+q.Encode(), out)
		}
		v, err = c.do(ctx, http.MethodGet, "/admin/v1/usage?"+q.Encode(), nil)
	}
	if err != nil {
		return err
	}
	enc := json.NewEncoder(out)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// crud runs list, get, create, update or the delete verb (named del) on a collection; flags
// turns the remaining arguments into the JSON body of create and update.
func (c *client) crud(ctx context.Context, base, verb, del string, args []string,
	flags func([]string) (map[string]any, error),
) (any, error) {
	switch verb {
	case "list":
		return c.do(ctx, http.MethodGet, base, nil)
	case "create":
		body, err := flags(args)
		if err != nil {
			return nil, err
		}
		return c.do(ctx, http.MethodPost, base, body)
	case "update":
		if len(args) == 0 {
			return nil, usageError{"update ID [flags]"}
		}
		body, err := flags(args[1:])
		if err != nil {
			return nil, err
		}
		return c.do(ctx, http.MethodPatch, base+"/"+url.PathEscape(args[0]), body)
	}
	id, err := one(args)
	if err != nil {
		return nil, err
	}
	method := http.MethodGet
	if verb == del {
		method = http.MethodDelete
	}
	return c.do(ctx, method, base+"/"+url.PathEscape(id), nil)
}

func one(args []string) (string, error) {
	if len(args) != 1 {
		return "", usageError{"expected exactly one ID"}
	}
	return args[0], nil
}

// keyFlags turns key flags into a JSON body holding only the flags given.
func keyFlags(args []string) (map[string]any, error) {
	fs := flag.NewFlagSet("keys", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	name := fs.String("name", "", "")
	budget := fs.Float64("budget", 0, "")
	models := fs.String("models", "", "")
	rpm := fs.Int("rpm", 0, "")
	conc := fs.Int("max-concurrency", 0, "")
	tpm := fs.Int("tpm", 0, "")
	period := fs.String("budget-period", "", "")
	team := fs.String("team", "", "")
	cacheTTL := fs.Int("cache-ttl", 0, "")
	expires := fs.String("expires", "", "")
	if err := fs.Parse(args); err != nil {
		return nil, usageError{usage}
	}
	body := map[string]any{}
	var err error
	fs.Visit(func(f *flag.Flag) {
		switch f.Name {
		case "name":
			body["name"] = *name
		case "budget":
			body["budget_usd"] = *budget
		case "models":
			body["models"] = splitList(*models)
		case "rpm":
			body["rpm"] = *rpm
		case "max-concurrency":
			body["max_concurrency"] = *conc
		case "tpm":
			body["tpm"] = *tpm
		case "cache-ttl": // 0 turns the key's cache off
			body["cache_ttl_s"] = *cacheTTL
			if *cacheTTL == 0 {
				body["cache_ttl_s"] = nil
			}
		case "team": // "none" takes the key out of its team
			body["team_id"] = *team
			if *team == "none" {
				body["team_id"] = nil
			}
		case "budget-period": // "none" clears it
			body["budget_period"] = *period
			if *period == "none" {
				body["budget_period"] = nil
			}
		case "expires":
			t, e := time.Parse(time.RFC3339, *expires)
			if e != nil {
				err = usageError{"-expires: want RFC 3339, e.g. 2027-01-01T00:00:00Z"}
			}
			body["expires_at"] = t.Unix()
		}
	})
	return body, err
}

// channelFlags turns channel flags into a JSON body holding only the flags given.
func channelFlags(args []string) (map[string]any, error) {
	fs := flag.NewFlagSet("channels", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	name := fs.String("name", "", "")
	provider := fs.String("provider", "", "")
	baseURL := fs.String("base-url", "", "")
	apiKey := fs.String("api-key", "", "")
	models := fs.String("models", "", "")
	mapping := fs.String("map", "", "")
	priority := fs.Int("priority", 0, "")
	weight := fs.Int("weight", 1, "")
	disabled := fs.Bool("disabled", false, "")
	if err := fs.Parse(args); err != nil {
		return nil, usageError{usage}
	}
	body := map[string]any{}
	var err error
	fs.Visit(func(f *flag.Flag) {
		switch f.Name {
		case "name":
			body["name"] = *name
		case "provider":
			body["provider"] = *provider
		case "base-url":
			body["base_url"] = *baseURL
		case "api-key":
			body["api_key"] = *apiKey
		case "models":
			body["models"] = splitList(*models)
		case "map":
			m := map[string]string{}
			for _, pair := range splitList(*mapping) {
				k, v, ok := strings.Cut(pair, "=")
				if !ok {
					err = usageError{"-map: want alias=model,…"}
				}
				m[k] = v
			}
			body["model_map"] = m
		case "priority":
			body["priority"] = *priority
		case "weight":
			body["weight"] = *weight
		case "disabled":
			body["enabled"] = !*disabled
		}
	})
	return body, err
}

func splitList(s string) []string {
	out := []string{}
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

type client struct {
	base  string
	token string
	http  *http.Client
}

// do calls the admin API and decodes its JSON answer; a non-2xx answer is an error carrying
// the API's message.
func (c *client) do(ctx context.Context, method, path string, body any) (any, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req) //nolint:bodyclose // released by httpbody.Close, the one release helper
	if err != nil {
		return nil, err
	}
	defer httpbody.Close(resp)
	b, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return nil, err
	}
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		return nil, fmt.Errorf("%s %s: %s: answer is not JSON", method, path, resp.Status)
	}
	if resp.StatusCode/100 != 2 {
		var e struct {
			Error struct {
				Message string `json:"message"`
			} `json:"error"`
		}
		_ = json.Unmarshal(b, &e)
		return nil, fmt.Errorf("%s %s: %s: %s", method, path, resp.Status, e.Error.Message)
	}
	return v, nil
}

// raw GETs path and copies a successful answer to out as it is (the CSV export).
func (c *client) raw(ctx context.Context, path string, out io.Writer) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+path, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	resp, err := c.http.Do(req) //nolint:bodyclose // released by httpbody.Close, the one release helper
	if err != nil {
		return err
	}
	defer httpbody.Close(resp)
	if resp.StatusCode/100 != 2 {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		return fmt.Errorf("GET %s: %s: %s", path, resp.Status, bytes.TrimSpace(b))
	}
	_, err = io.Copy(out, io.LimitReader(resp.Body, 1<<30))
	return err
}

// batches runs batches list, show or cancel.
func (c *client) batches(ctx context.Context, verb string, args []string) (any, error) {
	if verb == "list" {
		fs := flag.NewFlagSet("batches list", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		key := fs.String("key", "", "key id")
		limit := fs.Int("limit", 20, "batches at most (1-100)")
		if err := fs.Parse(args); err != nil {
			return nil, usageError{"batches list [-key ID] [-limit N]"}
		}
		q := url.Values{"limit": {fmt.Sprint(*limit)}}
		if *key != "" {
			q.Set("key_id", *key)
		}
		return c.do(ctx, http.MethodGet, "/admin/v1/batches?"+q.Encode(), nil)
	}
	id, err := one(args)
	if err != nil {
		return nil, err
	}
	if verb == "cancel" {
		return c.do(ctx, http.MethodPost, "/admin/v1/batches/"+url.PathEscape(id)+"/cancel", nil)
	}
	return c.do(ctx, http.MethodGet, "/admin/v1/batches/"+url.PathEscape(id), nil)
}
