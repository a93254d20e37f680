package tokencache_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/brokertoken/brokertoken/tokencache"
)

// exampleRedis stands in for your Redis: an embedded server, so the examples run anywhere.
func exampleRedis() (*redis.Client, func()) {
	m := miniredis.NewMiniRedis()
	if err := m.Start(); err != nil {
		panic(err)
	}
	rdb := redis.NewClient(&redis.Options{Addr: m.Addr()})
	return rdb, func() { rdb.Close(); m.Close() }
}

// exampleBroker stands in for a broker package such as tradovate.
type exampleBroker struct{ n int }

func (b *exampleBroker) Login(ctx context.Context, user string) (*tokencache.Token, error) {
	b.n++
	return &tokencache.Token{
		AccessToken: fmt.Sprintf("token-%d-for-%s", b.n, user),
		Expiry:      time.Now().Add(90 * time.Minute),
	}, nil
}

func ExampleNew() {
	rdb, stop := exampleRedis()
	defer stop()

	cache, err := tokencache.New(tokencache.Options{
		Redis:         rdb,
		Authenticator: &exampleBroker{},
		// Trading accounts PAAPEX2720450000001... share the login APEX_272045.
		UserFor: func(account string) string {
			if len(account) == 19 && account[:6] == "PAAPEX" {
				return "APEX_" + account[6:12]
			}
			return account
		},
	})
	if err != nil {
		panic(err)
	}
	defer cache.Close()

	tok, err := cache.Token(context.Background(), "PAAPEX2720450000001")
	if err != nil {
		panic(err)
	}
	fmt.Println(tok.AccessToken)
	// Output: token-1-for-APEX_272045
}

func ExampleCache_Token() {
	rdb, stop := exampleRedis()
	defer stop()
	broker := &exampleBroker{}
	cache, _ := tokencache.New(tokencache.Options{Redis: rdb, Authenticator: broker})
	defer cache.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for range 3 {
		tok, err := cache.Token(ctx, "APEX_272045")
		if err != nil {
			panic(err)
		}
		fmt.Println(tokencache.Redact(tok.AccessToken))
	}
	fmt.Println("logins:", broker.n)
	// Output:
	// token-…(23)
	// token-…(23)
	// token-…(23)
	// logins: 1
}

func ExampleCache_Token_readOnly() {
	rdb, stop := exampleRedis()
	defer stop()
	// No Authenticator: this process only reads what the daemon writes.
	cache, _ := tokencache.New(tokencache.Options{Redis: rdb})
	defer cache.Close()

	_, err := cache.Token(context.Background(), "APEX_272045")
	if errors.Is(err, tokencache.ErrNoToken) {
		fmt.Println("no token yet: is the daemon running?")
	}
	// Output: no token yet: is the daemon running?
}

func ExampleCache_Source() {
	rdb, stop := exampleRedis()
	defer stop()
	cache, _ := tokencache.New(tokencache.Options{Redis: rdb, Authenticator: &exampleBroker{}})
	defer cache.Close()

	// Resolve the account once; each Token call is then a single atomic load.
	src := cache.Source("APEX_272045")
	tok, err := src.Token(context.Background())
	if err != nil {
		panic(err)
	}
	fmt.Println(tok.Version > 0)
	// Output: true
}

func ExampleCache_Watch() {
	rdb, stop := exampleRedis()
	defer stop()
	cache, _ := tokencache.New(tokencache.Options{Redis: rdb, Authenticator: &exampleBroker{}})
	defer cache.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	changes := cache.Watch(ctx, "APEX_272045") // before Token: no change can slip between
	tok, _ := cache.Token(ctx, "APEX_272045")
	fmt.Println("connect with", tok.AccessToken)

	// Elsewhere, a new token is stored (a refresh, or the daemon's Set).
	_, _ = cache.Set(ctx, "APEX_272045", &tokencache.Token{AccessToken: "token-2", Expiry: time.Now().Add(time.Hour)})

	for t := range changes {
		if t.Version > tok.Version {
			fmt.Println("reconnect with", t.AccessToken)
			break
		}
	}
	// Output:
	// connect with token-1-for-APEX_272045
	// reconnect with token-2
}

func ExampleCache_Invalidate() {
	rdb, stop := exampleRedis()
	defer stop()
	broker := &exampleBroker{}
	cache, _ := tokencache.New(tokencache.Options{Redis: rdb, Authenticator: broker})
	defer cache.Close()
	ctx := context.Background()

	tok, _ := cache.Token(ctx, "APEX_272045")
	// The broker answered 401 to tok: report it, then ask again.
	_ = cache.Invalidate(ctx, "APEX_272045", tok.AccessToken)
	next, _ := cache.Token(ctx, "APEX_272045")
	fmt.Println(next.AccessToken != tok.AccessToken, "logins:", broker.n)
	// Output: true logins: 2
}

func ExampleTransport() {
	rdb, stop := exampleRedis()
	defer stop()
	cache, _ := tokencache.New(tokencache.Options{Redis: rdb, Authenticator: &exampleBroker{}})
	defer cache.Close()

	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, r.Header.Get("Authorization"))
	}))
	defer api.Close()

	client := &http.Client{Transport: &tokencache.Transport{Cache: cache, Account: "APEX_272045"}}
	resp, err := client.Get(api.URL + "/account/list")
	if err != nil {
		panic(err)
	}
	defer resp.Body.Close()
	var body [64]byte
	n, _ := resp.Body.Read(body[:])
	fmt.Println(string(body[:n]))
	// Output: Bearer token-1-for-APEX_272045
}
