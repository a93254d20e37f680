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
//   - [Broker.ExpiryAlerts]: the alerts due before the refresh token's expiry
//     (default 24 h and 2 h), each returned once across the fleet.
//
// # Rotation is linear
//
// Providers such as Schwab's revoke every token of a grant when an old refresh token is
// presented again, so a refresh token must be sent once, by one process, and the one
// it is exchanged for must never be lost. tokencache already calls Login or Renew for
// one caller at a time (its lease); because a lease can run out under a paused process,
// the refresh token is guarded on its own:
//
//  1. One Lua script reads the stored refresh token of generation G and claims it with a
//     rotation marker (owner, deadline in Redis time). Another owner's live marker makes
//     the caller wait instead of sending G's refresh token too.
//  2. The refresh is sent with a deadline inside the claim.
//  3. New tokens are stored as generation G+1 by a compare-and-set on G (and on the
//     marker's owner) before the access token is returned. Redis failures are retried
//     until Redis takes it; once the caller's context ends (a cache closing on
//     SIGTERM), for [Options.CommitGrace] more, detached from that context. What is
//     still unstored stays in the Broker and is stored first by its next call.
//  4. A refused grant (invalid_grant, or [Provider.GrantRefused]) deletes the dead
//     refresh token and marks the status revoked, in one script: the process whose
//     script did it calls [Hooks.Revoked], once for the fleet, and every later attempt
//     fails with a [*LoginRequiredError] ([ErrRevoked]) without a request, until a
//     human authorizes again. The error is not Temporary: the cache waits its RetryMax.
//  5. No answer (a timeout, a lost connection, a process killed after the provider
//     rotated): the marker stays. After its deadline and a takeover delay, the next
//     process sends G's refresh token again: if the provider never saw it, the fleet
//     goes on; if it had rotated it, a strict provider refuses it as reused and the
//     user stops as in 4, with the status naming the interrupted refresh. This is the
//     one case in which a human must authorize again early, and it is never silent.
//
// # Keys
//
// With the cache's Prefix P (default "brokertoken") and the user U:
//
//	P:secret:{U}:oauth          the refresh token and newest access token (writer only)
//	P:{U}:oauth                 the status: state, generation, expiry (every role)
//	P:{U}:oauth:rotation        the rotation marker (every role may read it)
//	P:{U}:oauth:alert:<exp>:<s> an expiry alert's once-only claim
//	P:oauth:state:<state>       a login state, for StateTTL (writer only: PKCE verifier)
//
// The hash tag {U} puts a user's keys in the slot of its token record, so the scripts
// work on Redis Cluster. Records are "o1:<generation>:<JSON>", written only by the
// scripts in scripts/. The README's writer and reader ACLs cover them unchanged: the
// scripts use GET, SET, DEL and TIME; readers read "P:{*" but not "P:secret:*" nor
// "P:oauth:state:*". Redis should persist (append-only file): a restart without
// persistence loses the refresh token, except one being stored at that moment.
//
// Nothing this package logs, returns or renders contains a token, a code or the client
// secret: tokens appear as [tokencache.Redact] prefixes, and the provider's error
// answers are reduced to their code and a cleaned description.
package oauthbroker
