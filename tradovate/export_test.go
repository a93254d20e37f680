package tradovate

// NewOnMachine is New on a machine whose identifier is machine, so one test can play
// several machines.
func NewOnMachine(opts Options, machine string) (*Authenticator, error) {
	return newAuthenticator(opts, func() (string, error) { return "machine-id:" + machine, nil })
}

// The original system's account rules, unexported: tested here.
var (
	NamedAccounts  = namedAccounts
	LegacyAccounts = legacyAccounts
)
