// Package zerodha brings Zerodha Kite Connect access tokens into the shared
// [tokencache.Cache], so every service uses the newest token within milliseconds of a
// human's daily login, with no restart and no file to watch.
//
// Kite Connect has no automated login: a human logs in through Kite's page once a day,
// Kite sends the browser back to the app's redirect URL with a one-use request_token,
// and the app exchanges it (with a checksum made from its API secret) for an access
// token that lives until about 06:00 IST the next morning. An app holds one valid access
// token at a time: a new login kills the old one.
//
// The pieces, all made from one [App] (see [New]):
//
//   - [App.LoginURL] and [App.LoginHandler]: Kite's login URL with a single-use CSRF
//     state carried in redirect_params and stored in Redis, so any process can check it.
//   - [App.RedirectHandler]: the http.Handler for Kite's redirect. It checks the state
//     and status, exchanges the request_token once, keeps the refresh token (when Kite
//     gives the app one) where only the writer role reads it, and stores the access
//     token with [tokencache.Cache.Set], expiring at the next 06:00 IST
//     ([Options.ExpiryTime]).
//     Every process sharing the Redis has it at once; [tokencache.Cache.Watch] tells
//     long-lived consumers such as websocket feeds to reconnect. Failures are shown to
//     the human as a page that says what happened and what to do, never a token or
//     the secret.
//   - [App.Authenticator]: the [tokencache.Authenticator], [tokencache.Renewer] and
//     [tokencache.Checker] for caches. With a stored refresh token and the API secret it
//     renews the session after each morning expiry (POST /session/refresh_token), once
//     for the fleet; otherwise, or when Kite refuses the refresh token, its Login
//     returns a [*LoginRequiredError] carrying the URL a human must open. That error is
//     not Temporary, so the cache waits its RetryMax before asking again instead of
//     looping. Check asks GET /user/profile whether a token still works.
//   - [App.UserInfo]: what Kite said about the user at the last login (user_id, name,
//     login_time, ...), kept in Redis beside the token for every process.
//   - [Transport], [AuthorizationHeader] and [CheckResponse]: Kite API calls with
//     "Authorization: token api_key:access_token". A 403 TokenException reports the
//     token to [tokencache.Cache.Invalidate]; services then wait for the next login.
//
// Kite's error envelopes ("status": "error", an error_type) are typed errors whatever
// the HTTP status they come with, as in the official Python client. docs/kite.md gives
// the source of each fact about Kite and what the test fake imitates.
//
// Times are computed in India Standard Time as a fixed UTC+05:30 zone (India has no
// daylight saving time), so no time zone database is needed.
package zerodha
