// Package tradovate logs users in to the Tradovate broker and renews their tokens, the
// way the broker documents it (docs/tradovate-auth.md), for use by a
// [tokencache.Cache] that shares the tokens across a fleet of processes.
//
// [New] returns an [Authenticator], which implements [tokencache.Authenticator] and
// [tokencache.Renewer]. It supports the official login (POST /auth/accesstokenrequest)
// and the TradingView-style form login (POST tv-*/authorize) chosen per credential,
// renewal (GET /auth/renewaccesstoken), time penalties (p-ticket, p-time), captchas and
// lockouts (HTTP 429 and 423) with a cool-down shared through Redis, and a fleet-wide
// login budget (10 logins a minute by default) kept in Redis.
//
// Credentials come from the original credentials.json ([LoadCredentials]) or the
// environment ([CredentialsFromEnv]); [NewAccountMap] maps trading sub-accounts to the
// login users whose token they share.
//
// Errors wrap sentinels such as [ErrBadCredentials], [ErrCaptchaRequired] and
// [ErrLockedOut]; test for them with [errors.Is]. No error, log line or formatted value
// contains a password or a whole token.
package tradovate
