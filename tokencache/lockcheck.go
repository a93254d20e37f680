//go:build !race

package tokencache

// checkLocks turns on held's check in race-enabled builds only: it costs a TryLock.
const checkLocks = false
