// Package tradovate logs users in to the Tradovate broker, renews and checks their
// tokens, the way the broker documents it (docs/tradovate.md gives each fact and its
// source), for use by a [tokencache.Cache] that shares the tokens across a fleet of
// processes.
//
// [New] returns an [Authenticator], which implements [tokencache.Authenticator],
// [tokencache.Renewer] and [tokencache.Checker]. It supports the official login (POST
// /auth/accesstokenrequest) and the TradingView-style form login (POST tv-*/authorize)
// chosen per credential, renewal (GET /auth/renewaccesstoken), the cheap validity check
// (GET /auth/me), time penalties (p-ticket, p-time), captchas and lockouts (HTTP 429 and
// 423) with a cool-down shared through Redis, and a fleet-wide login budget (10 logins a
// minute by default) kept in Redis.
//
// Tradovate wants one stable deviceId per device; a fleet sharing a login is one device,
// so the deviceId of each user is generated once and kept in Redis ([ReadDeviceID]).
// What the broker says about a user at login (its userId, which websocket
// user/syncrequest needs, name, hasLive) is kept in Redis too, for any process to read
// with [ReadUserInfo].
//
// Credentials come from the original credentials.json ([LoadCredentials]) or the
// environment ([CredentialsFromEnv]); [NewAccountMap] maps trading sub-accounts to the
// login users whose token they share, and an [AccountSync] keeps that map in step with
// the accounts the broker lists for each user ([Authenticator.Accounts]: GET
// /account/list, or GET /accounts?locale=en for TradingView-style logins).
//
// Errors wrap sentinels such as [ErrBadCredentials], [ErrCaptchaRequired],
// [ErrLockedOut] and [ErrUnknownLoginAnswer]; test for them with [errors.Is]. No error,
// log line or formatted value contains a password or a whole token.
package tradovate
