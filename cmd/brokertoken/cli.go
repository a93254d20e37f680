package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"
)

// commands, in the order the usage lists them, with their synopsis.
var commands = []struct{ name, args, about string }{
	{"run", "", "keep every login in the credentials file fresh; serve /healthz and /metrics; send alerts"},
	{"token", "ACCOUNT [--md]", "print the bare access token of ACCOUNT (--md: the market-data token)"},
	{"status", "[USER...] [--json]", "table of users, accounts, token state, expiry, version, last refresh, lease, cool-down, last error; the daemons"},
	{"decode", "[TOKEN|-] [--json]", "print a JWT's header, claims and expiry, without verifying it"},
	{"invalidate", "ACCOUNT", "report ACCOUNT's stored token as bad to the fleet and wait until a daemon stores a newer one"},
	{"clear-cooldown", "USER", "end USER's Tradovate cool-down (captcha, lockout, unread login answer) for the whole fleet, once the cause is dealt with"},
	{"authorize", "USER [--paste]", "print an authorization URL for an OAuth2 app (Schwab...) of the credentials file; --paste: then read the address the browser was sent back to and complete it"},
	{"version", "", "print the version"},
}

// run is the whole program: main only adds the process's arguments, environment,
// standard streams and signals, so tests can call run in-process. env looks up
// environment variables (os.LookupEnv). It returns the exit code: 0 success, 1 the
// command failed, 2 usage or configuration error (then nothing was written to Redis).
func run(ctx context.Context, args []string, env func(string) (string, bool), stdin io.Reader, stdout, stderr io.Writer) int {
	fail := func(err error, s *scrubber) int {
		fmt.Fprintln(stderr, "brokertoken: "+s.scrub(oneLine(err.Error())))
		return exitCode(err)
	}
	if len(args) == 0 {
		return fail(usagef("missing command: one of run, token, status, decode, invalidate, clear-cooldown, authorize (see brokertoken -h)"), nil)
	}
	cmd := args[0]
	switch cmd {
	case "-h", "-help", "--help", "help":
		if len(args) > 1 {
			if _, ok := commandOptions[args[1]]; ok {
				printCommandUsage(stdout, args[1], newFlags(args[1], env))
				return exitOK
			}
		}
		printUsage(stdout)
		return exitOK
	case "version", "-version", "--version":
		fmt.Fprintln(stdout, "brokertoken", version())
		return exitOK
	}
	if strings.HasPrefix(cmd, "-") {
		return fail(usagef("flags go after the command: brokertoken COMMAND [flags] (see brokertoken -h)"), nil)
	}
	if _, ok := commandOptions[cmd]; !ok {
		return fail(usagef("unknown command %q: want run, token, status, decode, invalidate, clear-cooldown or authorize (see brokertoken -h)", cmd), nil)
	}

	f := newFlags(cmd, env)
	var md, asJSON, paste bool
	switch cmd {
	case "token":
		f.fs.BoolVar(&md, "md", false, "print the market-data token (mdAccessToken) instead")
	case "authorize":
		f.fs.BoolVar(&paste, "paste", false, "after printing the URL, read the address the browser was sent back to from stdin and complete the authorization")
	case "status", "decode":
		f.fs.BoolVar(&asJSON, "json", false, "print JSON")
	}
	pos, err := f.parse(args[1:])
	if errors.Is(err, flag.ErrHelp) {
		printCommandUsage(stdout, cmd, f)
		return exitOK
	}
	if err != nil {
		return fail(err, nil)
	}
	cfg, err := f.load()
	if err != nil {
		return fail(err, nil)
	}

	s := newScrubber(cfg, env)
	log := newLogger(stderr, cfg.logFormat, cfg.logLevel, s, cmd != "run")

	switch cmd {
	case "run":
		if len(pos) > 0 {
			return fail(usagef("run: takes no arguments, found %q", pos[0]), s)
		}
		err = runDaemon(ctx, cfg, log, s)
	case "token":
		err = cmdToken(ctx, cfg, log, s, pos, md, stdout)
	case "status":
		err = cmdStatus(ctx, cfg, log, s, pos, asJSON, stdout)
	case "decode":
		err = cmdDecode(pos, asJSON, stdin, stdout, time.Now())
	case "invalidate":
		err = cmdInvalidate(ctx, cfg, log, s, pos, stdout, stderr)
	case "clear-cooldown":
		err = cmdClearCooldown(ctx, cfg, log, s, pos, stdout)
	case "authorize":
		err = cmdAuthorize(ctx, cfg, log, s, pos, paste, stdin, stdout, stderr)
	}
	if err != nil {
		if cmd != "run" && ctx.Err() != nil && exitCode(err) != exitUsage {
			err = fmt.Errorf("%s: interrupted", cmd)
		}
		return fail(err, s)
	}
	return exitOK
}

// newScrubber returns a command's scrubber, knowing the secrets of its configuration:
// the Redis passwords and the login page's basic auth password and shared secret
// (setup adds the credentials file's).
func newScrubber(cfg *config, env func(string) (string, bool)) *scrubber {
	s := &scrubber{}
	if pw, ok := env("REDIS_PASSWORD"); ok {
		s.add(pw)
	}
	if cfg.redis != nil {
		s.add(cfg.redis.passwords()...)
	}
	s.add(cfg.login.basicPassword, cfg.login.secret)
	return s
}

func printUsage(w io.Writer) {
	var b strings.Builder
	b.WriteString("brokertoken keeps broker tokens (Tradovate, Kite, Schwab and other OAuth2 apps) fresh in Redis and hands them to operators.\n\nUsage:\n")
	for _, c := range commands {
		fmt.Fprintf(&b, "  brokertoken %-36s %s\n", strings.TrimSpace(c.name+" "+c.args), c.about)
	}
	b.WriteString("\nEvery flag has an environment variable; a flag given wins over it.\n")
	b.WriteString("Run `brokertoken COMMAND -h` for a command's flags.\n")
	b.WriteString("\nExit codes: 0 success, 1 the command failed, 2 usage or configuration error.\n")
	_, _ = io.WriteString(w, b.String())
}

func printCommandUsage(w io.Writer, cmd string, f *flags) {
	var b strings.Builder
	for _, c := range commands {
		if c.name == cmd {
			fmt.Fprintf(&b, "Usage: brokertoken %s\n\n%s\n\nFlags:\n", strings.TrimSpace(cmd+" "+c.args), c.about)
		}
	}
	var names []string
	f.fs.VisitAll(func(fl *flag.Flag) { names = append(names, fl.Name) })
	sort.Strings(names)
	for _, n := range names {
		fl := f.fs.Lookup(n)
		v, isOpt := f.opts[n]
		if !isOpt {
			fmt.Fprintf(&b, "  --%s\n        %s\n", n, fl.Usage)
			continue
		}
		head := "  --" + n
		if !v.opt.isBool {
			head += " " + v.opt.kind
		}
		fmt.Fprintf(&b, "%s\n        %s", head, v.opt.usage)
		var extra []string
		if v.opt.env != "" {
			extra = append(extra, "env "+v.opt.env)
		}
		if d := defaultFor(v.opt, cmd); d != "" && !strings.Contains(v.opt.usage, "(default") {
			extra = append(extra, "default "+d)
		}
		if len(extra) > 0 {
			fmt.Fprintf(&b, " (%s)", strings.Join(extra, ", "))
		}
		b.WriteString("\n")
	}
	_, _ = io.WriteString(w, b.String())
}
