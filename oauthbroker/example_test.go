package oauthbroker_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/brokertoken/brokertoken/internal/testutil/oauthfake"
	"github.com/brokertoken/brokertoken/oauthbroker"
	"github.com/brokertoken/brokertoken/oauthbroker/schwab"
	"github.com/brokertoken/brokertoken/tokencache"
)

// The whole flow against a fake Schwab and an embedded Redis: a human authorizes once,
// then the cache refreshes with the refresh token, once for the fleet.
func Example() {
	m, err := miniredis.Run()
	if err != nil {
		log.Fatal(err)
	}
	defer m.Close()
	rdb := redis.NewClient(&redis.Options{Addr: m.Addr()})
	defer rdb.Close()
	fake := oauthfake.Start(oauthfake.Options{})
	defer fake.Close()
	mux := http.NewServeMux()
	web := httptest.NewServer(mux)
	defer web.Close()
	fake.AddClient("APPKEY", "APPSECRET", web.URL+"/schwab/callback")

	var b *oauthbroker.Broker
	b, err = oauthbroker.New(oauthbroker.Options{
		Provider:     schwab.ProviderAt(fake.URL()), // schwab.Provider() for the real one
		ClientID:     "APPKEY",
		ClientSecret: "APPSECRET",
		RedirectURL:  web.URL + "/schwab/callback",
		User:         "schwab-main",
		Redis:        rdb,
	})
	if err != nil {
		log.Fatal(err)
	}
	defer b.Close() // after the cache: stores a rotation Redis has not taken yet
	cache, err := tokencache.New(tokencache.Options{Redis: rdb, Authenticator: b.Authenticator()})
	if err != nil {
		log.Fatal(err)
	}
	defer cache.Close()
	mux.Handle("/schwab/login", b.LoginHandler())            // behind your operators' authentication
	mux.Handle("/schwab/callback", b.RedirectHandler(cache)) // the app's callback URL

	ctx := context.Background()
	_, err = cache.Token(ctx, "schwab-main")
	fmt.Println("before:", errors.Is(err, oauthbroker.ErrLoginRequired))

	jar, _ := cookiejar.New(nil)
	human := &http.Client{Jar: jar}                   // a browser keeps cookies
	resp, err := human.Get(web.URL + "/schwab/login") // the human, in a browser
	if err != nil {
		log.Fatal(err)
	}
	resp.Body.Close()
	fmt.Println("authorized:", resp.StatusCode)

	tok, _ := cache.Token(ctx, "schwab-main")
	renewed, _ := b.Authenticator().Renew(ctx, "schwab-main", tok) // what the cache does before expiry
	st, _ := b.Status(ctx)
	fmt.Println("new token:", renewed.AccessToken != tok.AccessToken, "generation:", st.Generation, "state:", st.State)
	fmt.Println("refresh token expires in:", time.Until(st.RefreshExpiry).Round(time.Hour))
	// Output:
	// before: true
	// authorized: 200
	// new token: true generation: 2 state: active
	// refresh token expires in: 168h0m0s
}

// exampleT lets miniredis run outside a test.
type exampleT struct{}

func (exampleT) Fatalf(format string, args ...any) { log.Fatalf(format, args...) }
func (exampleT) Cleanup(func())                    {}

// The daemon's caches refresh with the Broker's Authenticator; services read the token
// with a read-only cache (no Authenticator) and never see the refresh token.
func ExampleBroker_Authenticator() {
	rdb := redis.NewClient(&redis.Options{Addr: "localhost:6379"})
	b, err := oauthbroker.New(oauthbroker.Options{
		Provider: schwab.Provider(), ClientID: "APPKEY", ClientSecret: "APPSECRET",
		RedirectURL: "https://ops.example.com/schwab/callback", StartURL: "https://ops.example.com/schwab/login",
		User: "schwab-main", Redis: rdb,
		Hooks: oauthbroker.Hooks{Revoked: func(user string, err *oauthbroker.LoginRequiredError) {
			log.Printf("ALERT %s: authorize again at %s (%s)", user, err.URL, err.Detail) // once for the fleet
		}},
	})
	if err != nil {
		log.Fatal(err)
	}
	defer b.Close()
	writer, _ := tokencache.New(tokencache.Options{Redis: rdb, Authenticator: b.Authenticator()})
	defer writer.Close()
	_, err = writer.Token(context.Background(), "schwab-main")
	var lre *oauthbroker.LoginRequiredError
	if errors.As(err, &lre) {
		fmt.Println("a human must authorize at", lre.URL)
	}
}

// The status needs only a reader's Redis rights and no secret: what `brokertoken
// status` shows.
func ExampleReadStatus() {
	rdb := redis.NewClient(&redis.Options{Addr: "localhost:6379", Username: "brokertoken-reader"})
	st, err := oauthbroker.ReadStatus(context.Background(), rdb, "brokertoken", "schwab-main")
	if err != nil {
		log.Fatal(err)
	}
	switch st.State {
	case oauthbroker.StateActive:
		fmt.Printf("refresh token expires in %s (%d refreshes)\n", time.Until(st.RefreshExpiry).Round(time.Minute), st.Rotations)
	case oauthbroker.StateRevoked, oauthbroker.StateLost:
		fmt.Printf("%s since %s: %s\n", st.State, st.RevokedAt, st.Detail)
	case oauthbroker.StateMissing:
		fmt.Println("never authorized")
	}
}

// A daemon asks every minute which alerts are due (refused or lost refresh token,
// refused app credentials, expiry coming), sends each and acknowledges it: each is
// delivered at least once for the whole fleet, and again only if its sender died
// before acknowledging it.
func ExampleBroker_Alerts() {
	var b *oauthbroker.Broker // from oauthbroker.New
	ctx := context.Background()
	tick := time.NewTicker(time.Minute)
	defer tick.Stop()
	for range tick.C {
		alerts, err := b.Alerts(ctx)
		if err != nil {
			log.Print(err)
			continue
		}
		for _, a := range alerts {
			log.Print("ALERT ", a) // e.g. to a webhook; acknowledge once it is sent
			if _, err := b.Ack(ctx, a); err != nil {
				log.Print(err)
			}
		}
	}
}
