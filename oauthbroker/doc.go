// Package oauthbroker brings the access tokens of OAuth2 brokers (authorization code
// plus refresh token, such as Charles Schwab's Trader API: see the preset in
// [github.com/brokertoken/brokertoken/oauthbroker/schwab]) into the shared
// [github.com/brokertoken/brokertoken/tokencache.Cache]: a human authorizes the app
// once in a browser, and from then on exactly one process of the fleet at a time
// refreshes the access token with the refresh token kept in Redis, until the refresh
// token lapses.
//
// It is named for what it does, brokering one grant for a fleet; it is not
// tokencache/oauth2adapter, which goes the other way and hands the cache's tokens to
// libraries that take an [golang.org/x/oauth2.TokenSource].
//
// The pieces, all made from one [Broker] (see [New]) on golang.org/x/oauth2's Config:
//
//   - [Broker.LoginURL] and [Broker.LoginHandler]: the provider's authorization URL with
//     a single-use state (and a PKCE challenge when [Provider.PKCE]) stored in Redis, so
//     any process can answer the redirect.
//   - [Broker.RedirectHandler] (or [RedirectHandler] for several users of one app, and
//     [Broker.Complete] for headless setups): consumes the state, exchanges the code
//     once, stores the refresh token as a new grant where only the writer role reads it,
//     then the access token with [tokencache.Cache.Set].
//   - [Broker.Authenticator]: the [tokencache.Authenticator] and [tokencache.Renewer]
//     that refresh the access token, following the rotation protocol below.
//   - [ReadStatus] (reader rights, no secret): the grant's state, generation, refresh
//     count, refresh-token expiry, a refresh in flight, why it was stopped.
//   - [Broker.Alerts] and [Broker.Ack]: what a human must act on (a refused or lost
//     refresh token, refused app credentials, the refresh token's expiry coming),
//     delivered at least once across the fleet, one process at a time.
//   - [Broker.Close]: stores a rotation Redis has not taken yet before the process
//     ends.
//
// # Rotation is linear
//
// Providers such as Schwab's revoke every token of a grant when an old refresh token is
// presented again, so a refresh token must be sent once, by one process, and the one
// it is exchanged for must never be lost. tokencache already calls Login or Renew for
// one caller at a time (its lease); because a lease can run out under a paused process,
// the refresh token is guarded on its own:
//
//  1. One refresh per Broker at a time; none while it holds a rotation Redis has not
//     taken yet.
//  2. One Lua script reads the stored refresh token of generation G of grant X (a
//     random id minted by each authorization) and claims it with a rotation marker
//     (owner, deadline in Redis time). A live marker of (G, X), whoever owns it, makes
//     the caller wait instead of sending G's refresh token too.
//  3. Right before sending, Redis's clock confirms the marker is still the caller's
//     and bounds the request to what is left of the claim.
//  4. New tokens are stored as generation G+1 by a compare-and-set on (G, X) (and on
//     the marker's owner) before the access token is returned: a rotation never
//     overwrites a newer grant, even after Redis lost its data and generations started
//     again at 1. When Redis does not take it, the Broker holds it and a writer
//     goroutine retries until Redis does or a newer grant supersedes it; callers get
//     [ErrRotationPending] meanwhile, and [Broker.Close] stores it first.
//  5. A refused grant (invalid_grant, or [Provider.GrantRefused]) of the stored (G, X)
//     moves the refused record aside, marks the status revoked and records an alert,
//     in one script: the process whose script did it calls [Hooks.Revoked], once for
//     the fleet, and every later attempt fails with a [*LoginRequiredError]
//     ([ErrRevoked]) without a request, until a human authorizes again. The error is
//     not Temporary: the cache waits its RetryMax. A refusal of a refresh token that is
//     no longer the stored one claims the stored one instead.
//  6. No answer (a timeout, a lost connection, a process killed after the provider
//     rotated): the marker stays. After its deadline and a takeover delay, the next
//     process sends G's refresh token again: if the provider never saw it, the fleet
//     goes on; if it had rotated it, a strict provider refuses it as reused and the
//     user stops as in 5, with the status naming the interrupted refresh. This is the
//     one case in which a human must authorize again early, and it is never silent.
//
// # Keys
//
// With the cache's Prefix P (default "brokertoken") and the user U:
//
//	P:secret:{U}:oauth          the refresh token and newest access token (writer only)
//	P:secret:{U}:oauth:refused  the last refused secret, kept as evidence (writer only)
//	P:{U}:oauth                 the status: state, generation, grant, expiry (every role)
//	P:{U}:oauth:rotation        the rotation marker (every role may read it)
//	P:{U}:oauth:alerts          the alerts, a hash (no secret)
//	P:oauth:state:<state>       a login state, for StateTTL (writer only: PKCE verifier)
//
// The hash tag {U} puts a user's keys in the slot of its token record, so the scripts
// work on Redis Cluster. Records are "o1:<generation>:<grant>:<JSON>", written only by
// the scripts in scripts/; a record of another format ("o2:...", a newer oauthbroker)
// is neither used nor replaced ([ErrRecordFormat]). The README's writer and reader ACLs cover them: the scripts
// use GET, SET, DEL, TIME, HGET, HSET, HDEL and HGETALL; readers read "P:{*" but not
// "P:secret:*" nor "P:oauth:state:*". Redis must keep the refresh token: run it with
// maxmemory-policy noeviction and persistence (append-only file); a loss turns the
// status "lost" ([StateLost], [ErrLost]) with an alert, and a human must authorize
// again.
//
// Nothing this package logs, returns or renders contains a token, a code or the client
// secret: tokens appear as [tokencache.Redact] prefixes, and the provider's error
// answers are reduced to their code and a cleaned description.
package oauthbroker
