package main

// This file holds the demo's stand-ins: an embedded Redis and a fake of Tradovate's REST
// API built on internal/testutil's fake broker. A service of your own needs none of it:
// it calls run with its Redis, user and credentials.

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"

	"github.com/redis/go-redis/v9"

	"github.com/brokertoken/brokertoken/internal/demoenv"
	"github.com/brokertoken/brokertoken/internal/testutil/tradovatefake"
	"github.com/brokertoken/brokertoken/tradovate"
)

// demo runs the service against a fake broker. Between the two rounds a colleague logs
// in twice on the web: Tradovate keeps two sessions per user, so the service's session
// is closed and its token answers 401.
func demo(ctx context.Context, w io.Writer, redisOpts *redis.Options, prefix string) error {
	fakes := &demoenv.Process{}
	defer fakes.Close()
	broker := tradovatefake.New(fakes, tradovatefake.Options{})
	const user = "APEX_272045"
	broker.AddUser(user, "demo-password")
	api := newBrokerAPI(broker)
	defer api.Close()
	fmt.Fprintf(w, "Redis at %s, fake Tradovate REST API at %s\n", redisOpts.Addr, api.RESTURL())

	rdb := redis.NewClient(redisOpts)
	defer rdb.Close()
	creds, err := tradovate.NewCredentials(tradovate.Credential{Username: user, Password: "demo-password"})
	if err != nil {
		return err
	}
	return run(ctx, w, config{
		Redis: rdb, Prefix: prefix, User: user,
		Tradovate: tradovate.Options{
			RESTURL:     api.RESTURL(),
			Method:      tradovate.MethodOfficial,
			Credentials: creds,
			DeviceID:    "brokertoken-demo",
		},
		Disrupt: func(ctx context.Context) error {
			fmt.Fprintln(w, "[elsewhere] two logins on the web platform: the service's session is closed")
			return webLogins(ctx, api.RESTURL(), creds, user, 2)
		},
	})
}

// webLogins logs user in n times outside the service, as a person on the web platform
// would, opening n new sessions.
func webLogins(ctx context.Context, restURL string, creds *tradovate.Credentials, user string, n int) error {
	web, err := tradovate.New(tradovate.Options{
		RESTURL: restURL, Method: tradovate.MethodOfficial, Credentials: creds, DeviceID: "a-browser",
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		return err
	}
	for range n {
		if _, err := web.Login(ctx, user); err != nil {
			return err
		}
	}
	return nil
}

// brokerAPI stands in for Tradovate's REST API: it serves GET /v1/account/list to the
// tokens the fake broker accepts (401 otherwise) and passes the auth endpoints to the
// fake broker. It records every account/list answer.
type brokerAPI struct {
	srv    *httptest.Server
	broker *tradovatefake.Server

	mu    sync.Mutex // guards calls
	calls []apiCall
}

// apiCall is one account/list request the fake API answered.
type apiCall struct {
	Token  string
	Status int
}

func newBrokerAPI(broker *tradovatefake.Server) *brokerAPI {
	a := &brokerAPI{broker: broker}
	target, _ := url.Parse(strings.TrimSuffix(broker.RESTURL(), "/v1")) // the fake's own URL always parses
	proxy := httputil.NewSingleHostReverseProxy(target)
	mux := http.NewServeMux()
	mux.Handle("/", proxy) // /v1/auth/...: the fake broker
	mux.HandleFunc("GET /v1/account/list", a.accountList)
	a.srv = httptest.NewServer(mux)
	return a
}

// RESTURL is the fake's counterpart of https://demo.tradovateapi.com/v1.
func (a *brokerAPI) RESTURL() string { return a.srv.URL + "/v1" }

// Close stops the server.
func (a *brokerAPI) Close() { a.srv.Close() }

// Calls returns the account/list requests answered so far.
func (a *brokerAPI) Calls() []apiCall {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]apiCall(nil), a.calls...)
}

func (a *brokerAPI) accountList(w http.ResponseWriter, r *http.Request) {
	token, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	status := http.StatusOK
	if !a.broker.Valid(token) {
		status = http.StatusUnauthorized
	}
	a.mu.Lock()
	a.calls = append(a.calls, apiCall{Token: token, Status: status})
	a.mu.Unlock()
	if status != http.StatusOK {
		w.WriteHeader(status)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode([]map[string]any{
		{"id": 1, "name": "DEMO272045", "accountType": "Customer", "active": true},
	})
}
