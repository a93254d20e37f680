package oauthbroker

import (
	"crypto/rand"
	_ "embed" // the Lua scripts
	"encoding/hex"
	"os"
	"strconv"
	"sync"

	"github.com/redis/go-redis/v9"
	"golang.org/x/oauth2"
)

// Broker is one user's grant with one OAuth2 app: it makes authorization URLs, answers
// the provider's redirect, and refreshes the access token for the fleet with the
// refresh token kept in Redis. Create it with [New]; its methods are safe for
// concurrent use.
type Broker struct {
	opts  Options
	conf  oauth2.Config
	owner string // this Broker's id in rotation markers

	mu      sync.Mutex // guards pending
	pending *pendingCommit

	testHook func(point string) // set by tests only (export_test.go)
}

// New returns a Broker for opts. It contacts neither the provider nor Redis.
func New(opts Options) (*Broker, error) {
	o, err := opts.init()
	if err != nil {
		return nil, err
	}
	b := &Broker{opts: o, owner: newOwner()}
	b.conf = oauth2.Config{
		ClientID:     o.ClientID,
		ClientSecret: o.ClientSecret,
		RedirectURL:  o.RedirectURL,
		Scopes:       o.Provider.Scopes,
		Endpoint: oauth2.Endpoint{
			AuthURL:   o.Provider.AuthURL,
			TokenURL:  o.Provider.TokenURL,
			AuthStyle: o.Provider.AuthStyle,
		},
	}
	return b, nil
}

// User returns the name under which the cache stores the access token ([Options.User]).
func (b *Broker) User() string { return b.opts.User }

// Provider returns the provider's name.
func (b *Broker) Provider() string { return b.opts.Provider.Name }

// Authenticator returns the [tokencache.Authenticator] (and [tokencache.Renewer]) that
// refreshes the user's access token with the stored refresh token. See [Authenticator].
func (b *Broker) Authenticator() *Authenticator { return &Authenticator{b: b} }

// hook calls the test hook at a named point of a refresh.
func (b *Broker) hook(point string) {
	if b.testHook != nil {
		b.testHook(point)
	}
}

// newOwner returns an id for rotation markers: the host and process, to tell operators
// who held one, and random bytes, unique per Broker.
func newOwner() string {
	var r [6]byte
	_, _ = rand.Read(r[:])
	host, _ := os.Hostname()
	return clean(host, 40) + "/" + strconv.Itoa(os.Getpid()) + "/" + hex.EncodeToString(r[:])
}

// Keys of a user (see the package documentation).
func (b *Broker) secretKey() string   { return b.opts.Prefix + ":secret:{" + b.opts.User + "}:oauth" }
func (b *Broker) statusKey() string   { return statusKey(b.opts.Prefix, b.opts.User) }
func (b *Broker) rotationKey() string { return rotationKey(b.opts.Prefix, b.opts.User) }
func (b *Broker) stateKey(state string) string {
	return b.opts.Prefix + ":oauth:state:" + state
}
func (b *Broker) alertKey(expiryMS int64, lead string) string {
	return b.opts.Prefix + ":{" + b.opts.User + "}:oauth:alert:" + strconv.FormatInt(expiryMS, 10) + ":" + lead
}

func statusKey(prefix, user string) string   { return prefix + ":{" + user + "}:oauth" }
func rotationKey(prefix, user string) string { return prefix + ":{" + user + "}:oauth:rotation" }

var (
	//go:embed scripts/begin.lua
	beginLua    string
	beginScript = redis.NewScript(beginLua)
	//go:embed scripts/commit.lua
	commitLua    string
	commitScript = redis.NewScript(commitLua)
	//go:embed scripts/release.lua
	releaseLua    string
	releaseScript = redis.NewScript(releaseLua)
	//go:embed scripts/revoke.lua
	revokeLua    string
	revokeScript = redis.NewScript(revokeLua)
	//go:embed scripts/authorize.lua
	authorizeLua    string
	authorizeScript = redis.NewScript(authorizeLua)
	//go:embed scripts/consume_state.lua
	consumeStateLua    string
	consumeStateScript = redis.NewScript(consumeStateLua)
)
