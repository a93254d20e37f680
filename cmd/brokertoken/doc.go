// Command brokertoken keeps every broker login's token fresh in Redis (the daemon)
// and hands tokens to operators and scripts (the CLI). It replaces the original
// "Token Refresher Service" and its helper scripts; the Python services that read
// token:{account} from Redis keep working unchanged.
//
// Install it with
//
//	go install github.com/brokertoken/brokertoken/cmd/brokertoken@latest
//
// # Commands
//
//	brokertoken run                        keep every login in the credentials file fresh; the login page (Kite, Schwab, OAuth2)
//	brokertoken token ACCOUNT [--md]       print the bare access token (--md: market-data token)
//	brokertoken status [USER...] [--json]  table of users, their tokens and the daemons
//	brokertoken decode [TOKEN|-] [--json]  a JWT's header, claims and expiry, unverified
//	brokertoken invalidate ACCOUNT         report ACCOUNT's token as bad; wait for a newer one
//	brokertoken authorize USER [--paste]   an OAuth2 app's authorization URL; --paste: complete it here
//	brokertoken version                    version and commit
//
// Flags go after the command and may follow its arguments (token ACCOUNT --md).
// brokertoken -h and brokertoken COMMAND -h list them.
//
// run reads Redis first and logs in nobody who already has a valid token there; it
// renews each token before it expires (--refresh-before), logs in only when it must,
// sends at most --concurrency logins and renewals to the broker at once (a login
// counts while it waits for the budget or a time penalty), and spends the login budget
// it shares with every process on the same Redis (--login-budget requests a minute).
// Any number of run processes may share a Redis: each user is still refreshed by one
// of them at a time, through tokencache's lease. With --legacy-keys (on by default for
// run) it writes the original layout: token:{account} for the user and each of its
// sub-accounts, auth:{user} and token_expiry:{user} (a naive ISO time in
// --legacy-time-zone, by default the local zone), each expiring with the token, and the
// {user} list, which has no TTL; it also rewrites them when another process stored a
// token without them, when they expired or were deleted, and when the user's accounts
// change. A key holding a token the fleet did not write (an old refresher still running)
// is logged, counted, alerted and, while the broker still accepts the fleet's token, put
// back once; the daemon never logs in because of it. With --discover-accounts (on by
// default) it asks the broker for each user's accounts (GET /account/list, or GET
// /accounts?locale=en for TradingView-style logins) after each login and with each
// renewal, at most every 5 minutes (or every --accounts-every), with the stored token:
// an account opened at the broker gets its keys, a closed one loses them. After a
// TradingView-style login it renews at once, so the first token stored carries a
// market-data token (--exchange-tv-token=false turns that off). SIGINT or SIGTERM stops
// it within a second: refreshes in flight are cancelled and their leases released. A
// second signal kills it at once.
//
// run writes what readers need to see the fleet without its secrets: {prefix}:users
// (its users, their accounts and broker environment), {prefix}:accounts (account ->
// user), a heartbeat every second in {prefix}:daemons (removed on a clean stop), and
// {prefix}:{USER}:health (failing or not, the last error, the wait in progress). It
// checks its whole configuration (flags, credentials file, Redis) before it binds
// --listen or writes anything.
//
// token reads the cache like any consumer (memory, Redis, then the fleet's single
// refresh). With a credentials file it may log the user in or renew; without one (the
// default credentials.json missing) it only reads what the daemon stored, and maps a
// sub-account to its user through {prefix}:accounts. With a credentials file,
// sub-accounts come from the credential's "accounts" list, the original system's Redis
// list named after the user, and what the daemons learned from the broker
// ({prefix}:accounts). For example:
//
//	curl -H "Authorization: Bearer $(brokertoken token PAAPEX2720450000001)" ...
//
// status shows every user the daemons registered in Redis, and every user of the
// credentials file when one is given (or the users and accounts named): its accounts,
// state (fresh, stale, expired, missing, or "locked out" while a captcha or lockout
// cool-down is recorded), time to expiry, version, when and how (login, renew, set,
// reseed) the token was obtained, the token's first characters and length only, and a
// note: a refresh in progress (the lease is held), the daemon's current wait, a failure
// and since when, or the last error. The last line lists the daemons running and those
// gone. It only reads and needs no credentials file; the cool-downs are read from the
// broker environment the daemon registered for the user unless --env or
// --tradovate-url is given.
//
// decode prints a JWT's header and claims and its exp, iat and nbf as times, without
// verifying the signature (no key is needed); the token itself is shown redacted.
// It reads stdin when given no token or "-", and ignores a leading "Bearer ".
//
// invalidate reports the stored token of ACCOUNT's user as bad, as a consumer that met
// a 401 would (a read-only cache's Invalidate): no process serves it again, and a daemon
// replaces it (one login for the whole fleet, within its login budget). invalidate
// itself reads no credentials and logs nobody in. It waits until a daemon has stored a
// newer version and prints it; meanwhile it says on stderr what the daemons do (a
// refresh in progress, a wait and how long, a failure). It gives up with exit status 1
// when no daemon is running (then it reports nothing), when every daemon stops, when a
// captcha or lockout cool-down keeps the user from being logged in, or after --timeout.
//
// Every wait over a second is said when it starts, with what is waited for, why and for
// how long: by run at INFO in its log (and in the user's health record), by the other
// commands as one line on stderr even with their logging off. The login budget, a time
// penalty, a retry, a cool-down, another process's refresh (its lease) and a full
// --concurrency are such waits.
//
// # Configuration
//
// Every flag has an environment variable; a flag given on the command line wins, an
// empty variable counts as unset.
//
//	flag               environment                  default
//	--redis            REDIS_URL                    redis://127.0.0.1:6379/0 (password also REDIS_PASSWORD)
//	--redis-ca         BROKERTOKEN_REDIS_CA         system roots
//	--credentials      BROKERTOKEN_CREDENTIALS      credentials.json
//	--env              TRADOVATE_ENV                demo (or live)
//	--tradovate-url    TRADOVATE_URL                the environment's REST URL
//	--tv-url           TRADOVATE_TV_URL             the environment's TradingView login URL
//	--prefix           BROKERTOKEN_PREFIX           brokertoken
//	--legacy-keys      BROKERTOKEN_LEGACY_KEYS      true for run, false otherwise
//	--alert-webhook    BROKERTOKEN_ALERT_WEBHOOK    none (alerts are only logged)
//	--alert-format     BROKERTOKEN_ALERT_FORMAT     auto (discord or json)
//	--listen           BROKERTOKEN_LISTEN           127.0.0.1:9464 (run; empty disables)
//	--log-format       BROKERTOKEN_LOG_FORMAT       text (or json)
//	--log-level        BROKERTOKEN_LOG_LEVEL        info for run, off otherwise
//	--concurrency      BROKERTOKEN_CONCURRENCY      10 (run)
//	--refresh-before   BROKERTOKEN_REFRESH_BEFORE   15m
//	--leeway           BROKERTOKEN_LEEWAY           30s
//	--retry-max        BROKERTOKEN_RETRY_MAX        1m
//	--check-interval   BROKERTOKEN_CHECK_INTERVAL   2s (run)
//	--login-budget     BROKERTOKEN_LOGIN_BUDGET     10 login requests a minute, fleet-wide
//	--timeout          BROKERTOKEN_TIMEOUT          2m
//
// The Redis URL is one of:
//
//	redis://[user:password@]host[:port][/db][?dial_timeout=3s&...]   one node
//	rediss://...                                                     one node over TLS
//	unix://[user:password@]/path/to/redis.sock[?db=N]                one node on a socket
//	redis://h1:7000,h2:7001 (or redis://h1:7000,redis://h2:7001)     Redis Cluster seeds
//	redis+cluster://h1:7000[,h2:7001]  rediss+cluster://...          Redis Cluster
//	redis://h1:7000?addr=h2:7001&addr=h3:7002                        Redis Cluster (go-redis's form)
//	redis+sentinel://[user:pw@]s1[:26379][,s2...]/MASTER[/db]        the master Sentinel names
//	redis://[suser:spw@]s1:26379?master_name=MASTER&addr=s2:26379    the same, go-redis's failover form
//
// The password comes from the URL, else from REDIS_PASSWORD (Azure Cache for Redis:
// rediss://name.redis.cache.windows.net:6380/0 with REDIS_PASSWORD set). Query options
// are go-redis's (dial_timeout, read_timeout, pool_size, skip_verify...). Cluster URLs
// accept database 0 only. In redis+sentinel:// URLs the user and password are the
// master's; sentinel_username and sentinel_password options are the sentinels'
// (rediss+sentinel:// speaks TLS to both). Over TLS, a failed handshake says why (a
// plain port, an unknown certificate authority) instead of timing out.
//
// # Endpoints
//
// run serves on --listen:
//
//   - /healthz: 200 when every user has a valid token in Redis (fresh, or stale while its
//     renewal runs), else 503. The JSON body lists every user with its state, seconds
//     to expiry, version and, while its refreshes fail, the kind and text of the last
//     failure; "unhealthy" names the users without a valid token. When Redis cannot be
//     read, every user is "unknown" and "error" says why. It reads Redis, so every
//     daemon sharing a Redis gives the same answer, within 0.8 s. Use it for readiness
//     and alerting, not as a liveness probe: a broker outage is not cured by a restart.
//
//   - /metrics: the Prometheus client library's registry (text format, or OpenMetrics
//     when asked), with the series below, the Go runtime (go_*), process (process_*)
//     and go_build_info series.
//
// The /metrics series:
//
//	brokertoken_refreshes_total{user,op}           tokens obtained by this process (op login|renew)
//	brokertoken_logins_total{user}                 successful logins by this process
//	brokertoken_renewals_total{user}               successful renewals by this process
//	brokertoken_refresh_failures_total{user,op,kind}  failed refreshes (op login|renew|redis)
//	brokertoken_token_expiry_seconds{user}         seconds to expiry of the newest known token
//	brokertoken_token_valid{user}                  1 while that token has not expired (nor been refused)
//	brokertoken_user_failing{user}                 1 while the user's refreshes fail
//	brokertoken_lease_waits_total{user}            waits for another process's refresh
//	brokertoken_lease_wait_seconds_total{user}     time spent in those waits
//	brokertoken_invalidations_total{user}          newer tokens announced by other processes
//	brokertoken_alerts_total{event}                alerts delivered by this process
//	brokertoken_alert_errors_total                 alerts the webhook did not accept
//	brokertoken_redis_up                           1 while Redis answers pings
//	brokertoken_users                              users in the credentials file
//	brokertoken_broker_call_duration_seconds{op,result}  histogram of logins and renewals
//	brokertoken_broker_calls_in_flight             logins and renewals running now
//	brokertoken_build_info{version,commit,goversion}  1
//
// The cache's series come from tokencache/promhooks, which services using the library
// can export too. deploy/prometheus holds alert rules and deploy/grafana a dashboard
// for them.
//
// Failure kinds: unavailable, malformed_response, unexpected_status, bad_credentials,
// captcha, locked_out, login_budget, penalty, inactive_user, unknown_user,
// token_rejected, redis, timeout, no_token, other.
//
// # Alerts
//
// With --alert-webhook, run posts an alert when a user's refresh first fails since its
// last good token, when the broker asks for a captcha or locks logins out (HTTP
// 429/423: one alert for the whole fleet, since every login is paused), and when the
// user has a new valid token again. Retries send nothing. Discord webhook URLs
// (discord.com, discordapp.com) get an embed, red for failures, dark red for captcha
// and lockout, orange for warnings, green for recovery; any other URL gets a JSON
// object with source, event (failure, captcha, locked_out, recovered, redis_down,
// redis_up, foreign_writer, for Kite users login_needed, token_rejected,
// token_unchecked, for OAuth2 users refresh_token_revoked, refresh_token_lost,
// invalid_client, refresh_token_expiring), severity, title, message, user, accounts,
// kind, error, version,
// expires_at, until, url, broker, host and time.
//
// Daemons sharing a Redis send each alert once: the first failure opens the user's
// incident with SET {prefix}:{user}:alert NX (24 h), a captcha takes
// {prefix}:{user}:alert-captcha and a lockout {prefix}:alert:lockout (for the
// cool-down); whoever's SET succeeds sends. The recovery goes to the daemon whose DEL
// of the incident key removes it. When Redis cannot be reached the daemons cannot
// agree, so each one sends its own alert (and redis_down / redis_up are always per
// daemon). Without a webhook, the same events are log lines at ERROR and INFO.
//
// # Kite in the daemon
//
// The credentials file may also hold Kite Connect apps, told apart by their broker
// field (entries without one are Tradovate logins):
//
//	{"broker": "kite", "name": "kite_main", "api_key": "...", "api_secret": "...", "user_id": "AB1234"}
//
// Each is a zerodha.App whose token is stored under name. Kite needs a human login once
// a day (tokens lapse at 06:00 IST), so run serves a login page at --login-url's path
// (default http://<--listen>/login; or on --login-listen alone, for a reverse proxy),
// optionally behind HTTP basic auth (--login-basic-auth) or a shared secret
// (--login-secret: typed once into the page, or sent by a proxy in the
// X-Brokertoken-Login-Secret header; the form's cookie is good for 30 days). It
// answers only at its own host names (--login-url's host, IP addresses, the names of
// its listen address; others get 421), and starts logins only from its own forms. It
// has one row per Kite user with the token's
// state and a "Log in with Kite" button; Kite's redirect comes back to
// <login-url>/<name>/redirect (register it with the app), which checks the single-use
// state, exchanges the request token and stores the token with the cache, so every
// Watch channel of every process receives it. Apps that Kite gives a refresh token are
// renewed by the daemon after each morning expiry. An entry without user_id stores a
// login of any Kite account the app allows: run warns about it at start.
//
// From --kite-reminder (default 08:45 IST) on --kite-reminder-days (default mon-fri) a
// Kite user without a valid token gets one login_needed alert a day with the page's URL
// and counts as unhealthy in /healthz; before then a missing Kite token is healthy (a
// reminder time before 06:00 reminds once the previous day's token lapses). A token a
// service reports after a 403 TokenException is checked with Kite; if Kite refuses it
// and no refresh token renews it, one token_rejected alert goes out per token version,
// fleet-wide, and brokertoken_token_valid is 0 for it; if Kite cannot be asked, one
// token_unchecked warning, and the token is not called rejected
// ({prefix}:{user}:alert-login:<day>, {prefix}:{user}:alert-rejected:<version>,
// {prefix}:{user}:alert-unchecked:<version>, SET NX). A renewal asked before the
// morning expiry (zerodha.ErrRenewalNotDue) is not a failure. status and /healthz show
// Kite users with "broker": "kite", "rejected" for a token Kite refused, and the page's
// URL while a human must log in.
//
// # OAuth2 apps in the daemon (Schwab)
//
// OAuth2 apps of the authorization-code flow go in the same file:
//
//	{"broker": "schwab", "name": "schwab_main", "app_key": "...", "app_secret": "...", "callback_url": "https://..."}
//	{"broker": "oauth2", "name": "x", "app_key": "...", "app_secret": "...", "provider": "X",
//	 "authorize_url": "https://...", "token_url": "https://...", "scopes": ["..."], "client_auth": "basic",
//	 "pkce": false, "access_token_lifetime": "30m", "refresh_token_lifetime": "168h"}
//
// Each is an oauthbroker.Broker (the schwab preset for "schwab"; --schwab-url replaces
// its API root) whose access token is stored under name (default: app_key).
// callback_url (default <login-url>/<name>/redirect) is sent as redirect_uri and must be
// the app's registered callback URL. The login page has a row per OAuth2 user (its
// grant: active with the refresh token's expiry, missing, revoked) with the same
// button and protection as Kite's; the redirect exchanges the code once and stores the
// refresh token where only the writer role reads it. brokertoken authorize USER prints
// an authorization URL for headless setups; with --paste it reads the address the
// browser was sent back to and completes the authorization itself. The daemon then
// refreshes the token with the refresh token (one process at a time, rotation kept
// linear by oauthbroker) until the refresh token lapses (Schwab: 7 days after the
// authorization). Its alerts are polled every minute from oauthbroker (Broker.Alerts)
// and acknowledged once delivered, so each reaches the webhook at least once and one
// daemon of the fleet sends it: --oauth-expiry-alerts (default 24h,2h) sends one
// refresh_token_expiring alert per lead time. A refresh token the provider refuses
// (invalid_grant: revoked, expired, reused) or that Redis lost stops every refresh of
// the user without retries and sends refresh_token_revoked or refresh_token_lost with
// the page's URL; the next authorization is reported as a recovery. invalid_client
// says the provider refuses the app key or secret: fix the credentials file. On
// SIGTERM run closes each OAuth2 broker after the cache, storing a rotated refresh
// token Redis has not taken yet (and logging one it could not). status,
// /healthz and the registry show the grant (from oauthbroker.ReadStatus, reader
// rights); /metrics has brokertoken_refresh_token_expiry_seconds and
// brokertoken_login_needed for them.
//
// # Exit codes
//
//	0  success; also run stopped by SIGINT or SIGTERM
//	1  the command failed: no token could be obtained, the broker refused, Redis failed
//	   during the command, decode was given something that is not a JWT
//	2  usage or configuration error: unknown command or flag, bad value in a flag or
//	   variable (named in the message), a missing or malformed credentials file (file
//	   and entry index), an unknown environment, a bad URL, a Redis that cannot be
//	   reached at start, an account not in the credentials file (or, for invalidate, in
//	   no daemon's registry), a --listen address in use. Nothing has been written to
//	   Redis.
//
// Errors are one line on stderr, starting with "brokertoken: ".
//
// # Deployment
//
// The repository's Dockerfile builds a static binary with deploy/build.sh and ships it
// alone on a distroless image as a non-root user; compose.yaml runs it with Redis;
// deploy/systemd/brokertoken.service runs it under systemd with a dynamic user and the
// credentials file passed by LoadCredential=. version prints the module version and
// commit the Go toolchain recorded from the git checkout, or those set with
// -ldflags "-X main.buildVersion=v1.2.3 -X main.buildCommit=0123abcd".
//
// # Secrets
//
// No password and no whole token reaches a log line, an error, an alert, /healthz,
// /metrics or the output of status, decode or invalidate: tokens appear as
// tokencache.Redact shows them (first six characters and the length), and every line
// written passes a filter that replaces the configured passwords, API secrets, the
// Redis password and the webhook URL with [REDACTED], and anything shaped like a JWT
// with its redacted form. Only token prints a token, because that is its job.
package main
