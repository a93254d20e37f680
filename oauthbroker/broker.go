package oauthbroker

import (
	"crypto/rand"
	_ "embed" // the Lua scripts
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"

	"github.com/redis/go-redis/v9"
	"golang.org/x/oauth2"
)

// Broker is one user's grant with one OAuth2 app: it makes authorization URLs, answers
// the provider's redirect, and refreshes the access token for the fleet with the
// refresh token kept in Redis. Create it with [New] and, in a process that refreshes,
// end it with [Broker.Close] (after closing the cache that uses it): a rotated refresh
// token that Redis could not take yet is stored by the Broker in the background, and
// Close gives it [Options.CommitGrace] to get there. Its methods are safe for
// concurrent use. Formatting a Broker (any fmt verb, slog) never shows the client
// secret or a token.
type Broker struct {
	opts  Options
	conf  oauth2.Config
	owner string    // this Broker's id in rotation markers
	rot   *rotation // the refreshes of this Broker (rotate.go, commit.go)

	testHook func(point string) // set by tests only (export_test.go)
}

// New returns a Broker for opts. It contacts neither the provider nor Redis, and
// starts no goroutine.
func New(opts Options) (*Broker, error) {
	o, err := opts.init()
	if err != nil {
		return nil, err
	}
	b := &Broker{opts: o, owner: newOwner(), rot: newRotation()}
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

// String names the Broker's provider, user and app, without the client secret or any
// token.
func (b Broker) String() string {
	return fmt.Sprintf("oauthbroker.Broker{Provider:%s User:%s ClientID:%s}", b.opts.Provider.Name, b.opts.User, b.opts.ClientID)
}

// GoString is String: %#v must not reveal the secret either.
func (b Broker) GoString() string { return b.String() }

// Format makes every fmt verb print String.
func (b Broker) Format(f fmt.State, _ rune) { _, _ = io.WriteString(f, b.String()) }

// LogValue makes log/slog print String, whatever the handler.
func (b Broker) LogValue() slog.Value { return slog.StringValue(b.String()) }

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
func (b *Broker) refusedKey() string  { return b.secretKey() + ":refused" }
func (b *Broker) statusKey() string   { return statusKey(b.opts.Prefix, b.opts.User) }
func (b *Broker) rotationKey() string { return rotationKey(b.opts.Prefix, b.opts.User) }
func (b *Broker) alertsKey() string   { return alertsKey(b.opts.Prefix, b.opts.User) }
func (b *Broker) stateKey(state string) string {
	return b.opts.Prefix + ":oauth:state:" + state
}

func statusKey(prefix, user string) string   { return prefix + ":{" + user + "}:oauth" }
func rotationKey(prefix, user string) string { return prefix + ":{" + user + "}:oauth:rotation" }
func alertsKey(prefix, user string) string   { return prefix + ":{" + user + "}:oauth:alerts" }

var (
	//go:embed scripts/begin.lua
	beginLua    string
	beginScript = redis.NewScript(beginLua)
	//go:embed scripts/check.lua
	checkLua    string
	checkScript = redis.NewScript(checkLua)
	//go:embed scripts/commit.lua
	commitLua    string
	commitScript = redis.NewScript(commitLua)
	//go:embed scripts/release.lua
	releaseLua    string
	releaseScript = redis.NewScript(releaseLua)
	//go:embed scripts/revoke.lua
	revokeLua    string
	revokeScript = redis.NewScript(revokeLua)
	//go:embed scripts/lost.lua
	lostLua    string
	lostScript = redis.NewScript(lostLua)
	//go:embed scripts/alerts.lua
	alertsLua    string
	alertsScript = redis.NewScript(alertsLua)
	//go:embed scripts/authorize.lua
	authorizeLua    string
	authorizeScript = redis.NewScript(authorizeLua)
	//go:embed scripts/consume_state.lua
	consumeStateLua    string
	consumeStateScript = redis.NewScript(consumeStateLua)
)
