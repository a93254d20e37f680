package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"strings"
	"time"

	"github.com/brokertoken/brokertoken/oauthbroker"
	"github.com/brokertoken/brokertoken/tokencache"
)

// cmdAuthorize prints a new authorization URL for an OAuth2 user of the credentials
// file, for setups where nobody opens the daemon's login page (a headless server, an
// SSH session). The URL carries a single-use state stored in Redis (valid for
// oauthbroker's StateTTL, 10 minutes) and the redirect URL the daemon uses (the
// entry's callback_url, else the page's redirect URL from the same --login-url,
// --login-listen and --listen), so whichever process the provider's redirect reaches
// completes it. With paste, it then reads from stdin the address the browser was sent
// back to (an app whose callback URL nothing serves, such as https://127.0.0.1) and
// completes the authorization itself: one code exchange, the refresh token stored for
// the daemons, the access token announced to every process. It needs the writer role
// and the app's secret, like the daemon.
func cmdAuthorize(ctx context.Context, cfg *config, log *slog.Logger, s *scrubber, args []string, paste bool,
	stdin io.Reader, stdout, stderr io.Writer) error {
	if len(args) != 1 || strings.TrimSpace(args[0]) == "" {
		return usagef("authorize: want one USER: brokertoken authorize USER [--paste]")
	}
	user := args[0]
	d, err := setup(ctx, cfg, log, s, setupOptions{creds: credsRequired})
	if err != nil {
		return err
	}
	defer d.close()
	o := d.oauthUser(user)
	switch {
	case o == nil && d.kiteUser(user) != nil:
		return usagef("authorize: %s is a Kite app: log in on the daemon's login page (Kite's redirect URL is fixed in the app's settings)", user)
	case o == nil:
		return usagef("authorize: %q is no OAuth2 app (\"broker\":\"schwab\" or \"oauth2\") of the credentials file %s", user, cfg.credentials)
	}
	callback := o.entry.CallbackURL
	if callback == "" {
		callback = cfg.login.redirectURL(user)
	}
	if callback == "" {
		return usagef("authorize: %s has no callback_url in %s and no login page gives it one (--login-url, --login-listen and --listen are empty)", user, cfg.credentials)
	}
	say := func(format string, a ...any) { fmt.Fprintln(stderr, "brokertoken: "+fmt.Sprintf(format, a...)) }

	lctx, cancel := context.WithTimeout(ctx, cfg.timeout)
	link, err := o.b.LoginURL(lctx)
	cancel()
	if err != nil {
		return fmt.Errorf("authorize %s: %w", user, err)
	}
	if _, err := fmt.Fprintln(stdout, link); err != nil {
		return err
	}
	if !paste {
		say("open the URL above in a browser within %s and authorize the app at %s; %s then sends the browser to %s, where a daemon's login page completes it. If nothing serves that address, run `brokertoken authorize %s --paste` instead.",
			authorizeStateTTL, o.broker(), o.broker(), callback, user)
		return nil
	}
	say("open the URL above in a browser within %s and authorize the app at %s; then paste here the whole address the browser was sent to (it starts with %s; a page that does not load is fine):",
		authorizeStateTTL, o.broker(), callback)
	line, err := readLine(ctx, stdin)
	if err != nil {
		return fmt.Errorf("authorize %s: reading the redirected address: %w", user, err)
	}
	query, err := redirectQuery(line)
	if err != nil {
		return usagef("authorize %s: %v", user, err)
	}
	cctx, cancel := context.WithTimeout(ctx, cfg.timeout)
	defer cancel()
	tok, err := o.b.Complete(cctx, d.cache, query)
	if err != nil {
		if errors.Is(err, oauthbroker.ErrInvalidState) {
			return fmt.Errorf("authorize %s: the pasted address's state is unknown, expired or used (each URL works once, for %s): run the command again", user, authorizeStateTTL)
		}
		return fmt.Errorf("authorize %s: %w", user, err)
	}
	expires := ""
	if st, err := o.b.Status(cctx); err == nil && !st.RefreshExpiry.IsZero() {
		expires = fmt.Sprintf("; the refresh token expires at %s (in %s)", st.RefreshExpiry.Local().Format("2006-01-02 15:04"),
			shortDuration(time.Until(st.RefreshExpiry)))
	}
	_, err = fmt.Fprintf(stdout, "%s: authorized at %s: token version %d (token %s, expires in %s)%s\n", user, o.broker(), tok.Version,
		tokencache.Redact(tok.AccessToken), shortDuration(time.Until(tok.Expiry)), expires)
	return err
}

// authorizeStateTTL is how long an authorization URL works (oauthbroker's default
// StateTTL, which the daemon keeps).
const authorizeStateTTL = 10 * time.Minute

// readLine reads one line from r, or fails when ctx ends first.
func readLine(ctx context.Context, r io.Reader) (string, error) {
	type result struct {
		line string
		err  error
	}
	ch := make(chan result, 1)
	go func() {
		line, err := bufio.NewReaderSize(io.LimitReader(r, 64<<10), 4096).ReadString('\n')
		if err == io.EOF && strings.TrimSpace(line) != "" {
			err = nil
		}
		ch <- result{strings.TrimSpace(line), err}
	}()
	select {
	case res := <-ch:
		if res.err == io.EOF {
			return "", errors.New("nothing was pasted")
		}
		return res.line, res.err
	case <-ctx.Done():
		return "", ctx.Err()
	}
}

// redirectQuery returns the query of a pasted redirect address: a whole URL, or its
// query alone ("code=...&state=..."). It must carry a state, and a code or an error.
func redirectQuery(line string) (url.Values, error) {
	raw := line
	if u, err := url.Parse(line); err == nil && (u.Scheme != "" || strings.Contains(line, "?")) {
		raw = u.RawQuery
	}
	q, err := url.ParseQuery(raw)
	if err != nil || q.Get("state") == "" || q.Get("code") == "" && q.Get("error") == "" {
		return nil, errors.New("the pasted text is not the address the provider sent the browser to (it has no state and code parameters)")
	}
	return q, nil
}
