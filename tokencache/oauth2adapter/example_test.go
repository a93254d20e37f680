package oauth2adapter_test

import (
	"context"
	"fmt"
	"log"
	"net/http"
	"net/http/httptest"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"golang.org/x/oauth2"

	"github.com/brokertoken/brokertoken/tokencache"
	"github.com/brokertoken/brokertoken/tokencache/oauth2adapter"
)

// exampleCache stands in for your cache: an embedded Redis and a token stored by "the
// daemon", so the examples run anywhere.
func exampleCache() (*tokencache.Cache, func()) {
	m := miniredis.NewMiniRedis()
	if err := m.Start(); err != nil {
		log.Fatal(err)
	}
	rdb := redis.NewClient(&redis.Options{Addr: m.Addr()})
	cache, err := tokencache.New(tokencache.Options{Redis: rdb}) // read-only: the daemon logs in
	if err != nil {
		log.Fatal(err)
	}
	_, err = cache.Set(context.Background(), "APEX_272045", &tokencache.Token{
		AccessToken: "token-from-the-daemon", Expiry: time.Now().Add(time.Hour),
	})
	if err != nil {
		log.Fatal(err)
	}
	return cache, func() { cache.Close(); rdb.Close(); m.Close() }
}

// Any library that takes an oauth2.TokenSource gets the cache's tokens.
func ExampleTokenSource() {
	cache, stop := exampleCache()
	defer stop()

	ctx := context.Background()
	ts := oauth2adapter.TokenSource(ctx, cache.Source("APEX_272045"))
	tok, err := ts.Token()
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(tok.Type(), tok.AccessToken, tok.Valid())
	// Output: Bearer token-from-the-daemon true
}

// NewClient is oauth2.NewClient without the reuse layer: every request carries the
// cache's newest token.
func ExampleNewClient() {
	cache, stop := exampleCache()
	defer stop()
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Println("the API got:", r.Header.Get("Authorization"))
	}))
	defer api.Close()

	ctx := context.Background()
	client := oauth2adapter.NewClient(ctx, oauth2adapter.TokenSource(ctx, cache.Source("APEX_272045")))
	// The same with oauth2's own transport:
	_ = &http.Client{Transport: &oauth2.Transport{Source: oauth2adapter.TokenSource(ctx, cache.Source("APEX_272045"))}}

	resp, err := client.Get(api.URL)
	if err != nil {
		log.Fatal(err)
	}
	resp.Body.Close()
	// Output: the API got: Bearer token-from-the-daemon
}
