package oauthbroker

// SetTestHook makes b call f at the named points of a refresh: "claimed" (the refresh
// token is claimed, nothing sent yet), "answered" (the provider answered, nothing
// stored yet) and "committed" (the rotation is stored, the token not yet returned).
func SetTestHook(b *Broker, f func(point string)) { b.testHook = f }

// Owner returns b's id in rotation markers.
func Owner(b *Broker) string { return b.owner }

// SteadyExpiry is steadyExpiry; ExpiryTolerance is expiryTolerance.
var SteadyExpiry, ExpiryTolerance = steadyExpiry, expiryTolerance
