//go:build race

package tokencache

// checkLocks turns on held's check in race-enabled builds (CI runs every test so).
const checkLocks = true
