// Package tokencache gives every process of a fleet a valid broker access token,
// shared through Redis: one process in the whole fleet logs in or renews, and every
// other one reads the result, from memory in nanoseconds or from Redis in one round
// trip, and drops its copy the moment a newer token is written anywhere.
//
// It knows no broker: a broker package (tradovate, zerodha) supplies an [Authenticator]
// (and, optionally, a [Renewer] and a [Checker]). Start with [New] and [Cache.Token].
//
// # Three layers
//
// A [Cache.Token] call goes through up to three layers, stopping at the first that has
// a token it may serve:
//
//	memory  the user's entry in this process: one atomic load, no lock, no allocation,
//	        while the token is fresh (until its refresh point, its expiry leeway, or
//	        MaxStaleness after Redis last confirmed it)
//	Redis   the user's record, read with one GET: the single source of truth
//	broker  Authenticator.Login or Renewer.Renew, for one caller in the whole fleet:
//	        one flight per user in the process, a Redis lease across processes
//
// Sub-accounts share their login user's token ([Options.UserFor]). A stale token
// (inside [Options.RefreshBefore]) is still served while one refresh runs in the
// background; an expired one (inside [Options.Leeway]) makes callers wait for the
// refresh, each bounded by its own context. Expiry comes from the broker's answer, else
// the JWT exp claim ([JWTExpiry]), else [Options.DefaultLifetime].
//
// # Announcements, reports and watchers
//
// After every write a writer publishes "<version>:<user>" on the announcement channel.
// A message is a hint: a cache that hears of a version newer than its copy stops
// serving the copy and reads Redis again; whatever Redis answers is served. Watchers
// ([Cache.Watch]) hear of each newer token once. A process whose broker rejected a token
// calls [Cache.Invalidate]: a cache that can refresh does so if Redis still holds that
// token; a read-only one reports it on the reports channel to the caches that can, which
// check it with the broker first ([Checker]) and act at most once per user per
// [Options.RetryMin].
//
// # Roles
//
// Every process gets the least Redis rights its role needs: the writer (the daemon, or
// any cache with an Authenticator) writes records and announces; a reader (a cache with
// no Authenticator) reads and subscribes; a reporter is a reader that may also report.
// A reader or reporter with those rights can make no process serve or store a token
// Redis never held, and cannot block a user. The README gives the exact ACL lines.
//
// # Guarantees
//
//   - One login per user for the whole fleet at a time; renewals preferred.
//   - A token reported bad is never served again by the process that reported it.
//   - Versions only grow: a cache never serves an older version after a newer one.
//   - Redis down: tokens in memory keep being served while valid; nobody logs in
//     directly ([ErrRedisUnavailable] once nothing valid is left).
//   - Broker down: the valid token keeps being served; failures back off, jittered and
//     capped; then callers get a [*RefreshError].
//   - Secrets never appear in logs, errors or %v output: a [Token] formats itself as a
//     short prefix and its length ([Redact]).
//
// # Where things are
//
// cache.go holds the API (New, Token, Source, Set, Close); state.go owns each user's
// entry: its phases, the events that move it, and the one rule of what may be served;
// refresh.go does a refresh's I/O (read, lease, broker, write); invalidate.go turns
// pub/sub messages into events; record.go and store.go read and write the Redis record
// (its format: v1:<version>:<json>, parsed alike by Go and the Lua scripts in
// scripts/). docs/architecture.md in the repository draws the data path and lists the
// Redis contract.
package tokencache
