package tradovate_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/brokertoken/brokertoken/tokencache"
	"github.com/brokertoken/brokertoken/tradovate"
)

// A daemon shares Tradovate tokens across a fleet: credentials from the original file,
// sub-accounts from the original naming rule, budget and cool-downs in Redis, and a
// tokencache.Cache that logs each user in once and renews from then on.
func ExampleNew() {
	ctx := context.Background()
	rdb := redis.NewClient(&redis.Options{Addr: "localhost:6379"})
	defer rdb.Close()

	creds, err := tradovate.LoadCredentials("credentials.json")
	if err != nil {
		log.Fatal(err)
	}
	auth, err := tradovate.New(tradovate.Options{
		Environment: tradovate.Demo,
		Credentials: creds,
		Redis:       rdb, // fleet-wide login budget and captcha/lockout cool-downs
	})
	if err != nil {
		log.Fatal(err)
	}
	accounts, err := tradovate.NewAccountMap(ctx, creds, tradovate.AccountOptions{NamingRule: true})
	if err != nil {
		log.Fatal(err)
	}
	cache, err := tokencache.New(tokencache.Options{
		Redis:         rdb,
		Authenticator: auth,
		UserFor:       accounts.UserFor,
		AccountsFor:   accounts.AccountsFor,
		LegacyKeys:    true, // token:{account} for the existing Python services
	})
	if err != nil {
		log.Fatal(err)
	}
	defer cache.Close()

	tok, err := cache.Token(ctx, "PAAPEX2720450000001")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(tok) // redacted: prefix and length only
}

// Login errors are branched on with errors.Is: bad credentials are never retried, and a
// captcha or lockout stops logins for the cool-down.
func ExampleAuthenticator_Login() {
	creds, err := tradovate.CredentialsFromEnv() // TRADOVATE_USERNAME, TRADOVATE_PASSWORD, ...
	if err != nil {
		log.Fatal(err)
	}
	auth, err := tradovate.New(tradovate.Options{Credentials: creds})
	if err != nil {
		log.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	tok, err := auth.Login(ctx, creds.Users()[0])
	var cooldown *tradovate.CooldownError
	switch {
	case errors.As(err, &cooldown):
		log.Printf("logins paused until %s: %v", cooldown.Until, err)
	case errors.Is(err, tradovate.ErrCaptchaRequired), errors.Is(err, tradovate.ErrLockedOut):
		log.Printf("a human must act: %v", err)
	case errors.Is(err, tradovate.ErrBadCredentials):
		log.Printf("fix the password: %v", err)
	case err != nil:
		log.Print(err)
	default:
		fmt.Println("expires", tok.Expiry)
	}
}

// The original system's naming rule maps a login user to its trading accounts.
func ExampleNewAccountMap() {
	creds, err := tradovate.NewCredentials(tradovate.Credential{Username: "APEX_272045", Password: "secret"})
	if err != nil {
		log.Fatal(err)
	}
	// The original system's naming rule: user APEX_272045 trades PAAPEX2720450000001..n.
	accounts, err := tradovate.NewAccountMap(context.Background(), creds,
		tradovate.AccountOptions{NamingRule: true, NamingRuleCount: 3})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(accounts.AccountsFor("APEX_272045"))
	fmt.Println(accounts.UserFor("PAAPEX2720450000002"))
	// Output:
	// [PAAPEX2720450000001 PAAPEX2720450000002 PAAPEX2720450000003]
	// APEX_272045
}

// LoadCredentials reads the original credentials.json unchanged and reports problems
// by file and entry, never showing a password.
func ExampleLoadCredentials() {
	dir, err := os.MkdirTemp("", "creds")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	path := dir + "/credentials.json"
	data := `[{"username": "APEX_272045", "password": "s3cret"}, {"username": "APEX_272046"}]`
	if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
		log.Fatal(err)
	}
	_, err = tradovate.LoadCredentials(path)
	fmt.Println(err != nil)
	// Output: true
}

// A Credential never prints its password, whatever the verb.
func ExampleCredential_String() {
	c := tradovate.Credential{Username: "APEX_272045", Password: "s3cret"}
	fmt.Printf("%v\n%+v\n", c, c)
	// Output:
	// Credential{Username:"APEX_272045" Password:[REDACTED]}
	// Credential{Username:"APEX_272045" Password:[REDACTED]}
}

// A websocket streamer needs the user's numeric id for user/syncrequest. It reads what
// the daemon's last login stored, with only read access to Redis and no credentials.
func ExampleReadUserInfo() {
	rdb := redis.NewClient(&redis.Options{Addr: "localhost:6379"})
	defer rdb.Close()
	ctx := context.Background()
	info, err := tradovate.ReadUserInfo(ctx, tradovate.Options{Redis: rdb}, "APEX_272045")
	switch {
	case errors.Is(err, tradovate.ErrNoUserInfo):
		log.Print("not logged in yet: ask again after the daemon's first login")
		return
	case err != nil:
		log.Fatal(err)
	}
	body := fmt.Sprintf(`{"users":[%d]}`, info.UserID)
	fmt.Print("user/syncrequest\n1\n\n" + body) // the frame to send after authorizing
}

// An operator's status command shows the deviceId every process presents for a user.
func ExampleReadDeviceID() {
	rdb := redis.NewClient(&redis.Options{Addr: "localhost:6379"})
	defer rdb.Close()
	id, err := tradovate.ReadDeviceID(context.Background(), tradovate.Options{Redis: rdb, Environment: tradovate.Live}, "APEX_272045")
	switch {
	case errors.Is(err, tradovate.ErrNoDeviceID):
		fmt.Println("deviceId: none yet (no official login so far)")
	case err != nil:
		log.Fatal(err)
	default:
		fmt.Println("deviceId:", tokencache.Redact(id))
	}
}

// Check asks the broker whether a token still works, without opening a session: valid,
// rejected, or cannot tell.
func ExampleAuthenticator_Check() {
	creds, err := tradovate.CredentialsFromEnv()
	if err != nil {
		log.Fatal(err)
	}
	auth, err := tradovate.New(tradovate.Options{Credentials: creds})
	if err != nil {
		log.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	user := creds.Users()[0]
	tok, err := auth.Login(ctx, user)
	if err != nil {
		log.Fatal(err)
	}
	switch err := auth.Check(ctx, user, tok); {
	case err == nil:
		fmt.Println("valid")
	case errors.Is(err, tokencache.ErrTokenRejected):
		fmt.Println("rejected")
	default:
		fmt.Println("cannot tell:", err)
	}
}

// Sub-accounts follow the broker: an AccountSync asks for each user's accounts after
// each login and renewal (with the stored token: it never logs in), so accounts opened
// at the prop firm are served and get their legacy key, and closed ones lose it.
func ExampleAccountSync() {
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	rdb := redis.NewClient(&redis.Options{Addr: "localhost:6379"})
	defer rdb.Close()
	creds, err := tradovate.LoadCredentials("credentials.json")
	if err != nil {
		log.Fatal(err)
	}
	auth, err := tradovate.New(tradovate.Options{Credentials: creds, Redis: rdb})
	if err != nil {
		log.Fatal(err)
	}
	// The original {user} lists stand for the broker's answer until the first one.
	accounts, err := tradovate.NewAccountMap(ctx, creds, tradovate.AccountOptions{LegacyRedis: rdb})
	if err != nil {
		log.Fatal(err)
	}
	var sync *tradovate.AccountSync
	cache, err := tokencache.New(tokencache.Options{
		Redis:         rdb,
		Authenticator: auth,
		LookupUser:    accounts.LookupUser, // an account learned later is served then
		AccountsFor:   accounts.AccountsFor,
		LegacyKeys:    true,
		Hooks: tokencache.Hooks{Refreshed: func(user, _ string, _ *tokencache.Token) {
			sync.Nudge(user) // ask right after each login and renewal
		}},
	})
	if err != nil {
		log.Fatal(err)
	}
	defer cache.Close()
	sync, err = tradovate.NewAccountSync(tradovate.AccountSyncOptions{
		Authenticator: auth, Cache: cache, Map: accounts, LegacyKeys: true,
	})
	if err != nil {
		log.Fatal(err)
	}
	go sync.Run(ctx)

	tok, err := cache.Token(ctx, "PAAPEX2720450000001")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(tok)
}
