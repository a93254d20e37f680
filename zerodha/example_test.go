package zerodha_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/brokertoken/brokertoken/internal/testutil/kitefake"
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

// Any process reads what Kite said about the user at the last login, beside the token,
// with read access to Redis only (here a fake Kite and an embedded Redis play the real
// ones, and a human's login is one GET).
func ExampleApp_UserInfo() {
	m := miniredis.NewMiniRedis()
	if err := m.Start(); err != nil {
		panic(err)
	}
	defer m.Close()
	rdb := redis.NewClient(&redis.Options{Addr: m.Addr()})
	defer rdb.Close()
	kite := kitefake.Start(kitefake.Options{UserID: "AB1234", UserName: "Asha Rao"})
	defer kite.Close()

	// The web process: it answers Kite's redirect and stores the login.
	web := http.NewServeMux()
	srv := httptest.NewServer(web)
	defer srv.Close()
	kite.AddApp("my_api_key", "my_api_secret", srv.URL+"/kite/redirect")
	app, _ := zerodha.New(zerodha.Options{APIKey: "my_api_key", APISecret: "my_api_secret", Redis: rdb,
		LoginURL: kite.LoginURL(), APIURL: kite.URL()})
	cache, _ := tokencache.New(tokencache.Options{Redis: rdb})
	defer cache.Close()
	web.Handle("/kite/redirect", app.RedirectHandler(cache))
	loginURL, _ := app.LoginURL(context.Background())
	if resp, err := http.Get(loginURL); err == nil { // the human logs in
		resp.Body.Close()
	}

	// A service: no secret, only the api_key and Redis.
	service, _ := zerodha.New(zerodha.Options{APIKey: "my_api_key", Redis: rdb})
	info, err := service.UserInfo(context.Background())
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(info.UserID, info.UserName, info.Broker)
	// Output: AB1234 Asha Rao ZERODHA
}

// Check asks Kite whether a token still works (GET /user/profile), without the secret:
// valid, rejected, or cannot tell.
func ExampleAuthenticator_Check() {
	rdb := redis.NewClient(&redis.Options{Addr: "localhost:6379"})
	defer rdb.Close()
	app, err := zerodha.New(zerodha.Options{APIKey: os.Getenv("KITE_API_KEY"), Redis: rdb})
	if err != nil {
		log.Fatal(err)
	}
	tok := &tokencache.Token{AccessToken: os.Getenv("KITE_ACCESS_TOKEN")}
	switch err := app.Authenticator().Check(context.Background(), app.User(), tok); {
	case err == nil:
		fmt.Println("valid")
	case errors.Is(err, tokencache.ErrTokenRejected):
		fmt.Println("rejected: a human must log in, or the refresh token renews it")
	default:
		fmt.Println("cannot tell:", err)
	}
}
