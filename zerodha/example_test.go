package zerodha_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net/http"
	"os"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/brokertoken/brokertoken/tokencache"
	"github.com/brokertoken/brokertoken/zerodha"
)

// The web process: it serves the login link and Kite's redirect, and stores each
// day's token in the shared cache, where every service finds it.
func ExampleNew() {
	rdb := redis.NewClient(&redis.Options{Addr: "localhost:6379"})
	defer rdb.Close()
	app, err := zerodha.New(zerodha.Options{
		APIKey:    os.Getenv("KITE_API_KEY"),
		APISecret: os.Getenv("KITE_API_SECRET"), // only this process needs it
		Redis:     rdb,
		StartURL:  "https://ops.example.com/kite/login", // shown to humans when a login is needed
		UserID:    "AB1234",                             // store no other Kite user's login
	})
	if err != nil {
		log.Fatal(err)
	}
	cache, err := tokencache.New(tokencache.Options{Redis: rdb, Authenticator: app.Authenticator()})
	if err != nil {
		log.Fatal(err)
	}
	defer cache.Close()

	http.Handle("/kite/login", app.LoginHandler())            // behind your operators' auth
	http.Handle("/kite/redirect", app.RedirectHandler(cache)) // the redirect URL registered with Kite
	log.Fatal(http.ListenAndServe(":8080", nil))
}

// A service calls Kite through the Transport: the Authorization header comes from the
// cache, and a 403 TokenException makes every process stop using the token.
func ExampleApp_Transport() {
	rdb := redis.NewClient(&redis.Options{Addr: "localhost:6379"})
	defer rdb.Close()
	app, err := zerodha.New(zerodha.Options{APIKey: os.Getenv("KITE_API_KEY"), Redis: rdb})
	if err != nil {
		log.Fatal(err)
	}
	cache, err := tokencache.New(tokencache.Options{Redis: rdb, Authenticator: app.Authenticator()})
	if err != nil {
		log.Fatal(err)
	}
	defer cache.Close()

	kite := &http.Client{Transport: app.Transport(cache, nil), Timeout: 10 * time.Second}
	resp, err := kite.Get(zerodha.DefaultAPIURL + "/user/profile")
	var login *zerodha.LoginRequiredError
	switch {
	case errors.As(err, &login):
		log.Printf("waiting for a human to log in at %s", login.URL)
	case err != nil:
		log.Print(err)
	default:
		defer resp.Body.Close()
		if err := zerodha.CheckResponse(resp); errors.Is(err, zerodha.ErrTokenException) {
			log.Print("Kite rejected the token; the next login will replace it")
		}
	}
}

// Until a human has logged in, services get an error that says where to log in.
func ExampleLoginRequiredError() {
	m := miniredis.NewMiniRedis()
	if err := m.Start(); err != nil {
		panic(err)
	}
	defer m.Close()
	rdb := redis.NewClient(&redis.Options{Addr: m.Addr()})
	defer rdb.Close()

	app, _ := zerodha.New(zerodha.Options{APIKey: "my_api_key", Redis: rdb, StartURL: "https://ops.example.com/kite/login"})
	cache, _ := tokencache.New(tokencache.Options{Redis: rdb, Authenticator: app.Authenticator()})
	defer cache.Close()

	_, err := cache.Token(context.Background(), app.User())
	var login *zerodha.LoginRequiredError
	if errors.As(err, &login) {
		fmt.Println("log in at", login.URL)
	}
	fmt.Println(errors.Is(err, zerodha.ErrLoginRequired))
	// Output:
	// log in at https://ops.example.com/kite/login
	// true
}

func ExampleExpiryAfter() {
	login := time.Date(2025, time.January, 6, 14, 0, 0, 0, time.UTC) // 19:30 IST
	fmt.Println(zerodha.ExpiryAfter(login, 6*time.Hour))
	fmt.Println(zerodha.ExpiryAfter(login, 6*time.Hour).UTC())
	// Output:
	// 2025-01-07 06:00:00 +0530 IST
	// 2025-01-07 00:30:00 +0000 UTC
}

func ExampleAuthorizationHeader() {
	req, _ := http.NewRequest(http.MethodGet, zerodha.DefaultAPIURL+"/user/profile", nil)
	req.Header.Set("Authorization", zerodha.AuthorizationHeader("my_api_key", "my_access_token"))
	req.Header.Set(zerodha.VersionHeader, zerodha.Version)
	fmt.Println(req.Header.Get("Authorization"))
	// Output: token my_api_key:my_access_token
}
