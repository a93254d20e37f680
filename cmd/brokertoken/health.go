package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"time"

	"github.com/brokertoken/brokertoken/oauthbroker"
	"github.com/brokertoken/brokertoken/tokencache"
)

// healthTimeout bounds the Redis reads of one /healthz request, so it answers within
// the usual one-second probe timeout.
const healthTimeout = 800 * time.Millisecond

// handler routes the daemon's HTTP endpoints.
func (dm *daemon) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", dm.handleHealth)
	mux.Handle("/metrics", dm.metrics.handler())
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("brokertoken: /healthz /metrics\n"))
	})
	if len(dm.desk.users) > 0 && dm.cfg.login.listen == "" {
		page := dm.desk.handler()
		mux.Handle(dm.cfg.login.pagePath, page)
		mux.Handle(dm.cfg.login.pagePath+"/", page)
	}
	return mux
}

// userHealth is one user's entry in the /healthz answer.
type userHealth struct {
	User      string   `json:"user"`
	State     string   `json:"state"` // fresh, stale, expired, missing or unknown (Redis unreadable)
	ExpiresIn *float64 `json:"expires_in_seconds,omitempty"`
	Version   int64    `json:"version,omitempty"`
	Failing   bool     `json:"failing,omitempty"`
	Kind      string   `json:"kind,omitempty"`  // kind of the last failure, while failing
	Error     string   `json:"error,omitempty"` // the last failure, while failing

	// Broker is "kite", "schwab" or "oauth2" for a user a human logs in through a
	// browser; LoginURL is where, while its token is not valid (or, for an OAuth2 user,
	// its grant needs a human).
	Broker   string `json:"broker,omitempty"`
	LoginURL string `json:"login_url,omitempty"`
	// Grant is an OAuth2 user's grant state (active, revoked or missing) and
	// RefreshExpiresIn the seconds until its refresh token expires.
	Grant            string   `json:"grant,omitempty"`
	RefreshExpiresIn *float64 `json:"refresh_token_expires_in_seconds,omitempty"`
}

// healthAnswer is the /healthz body.
type healthAnswer struct {
	Status    string       `json:"status"` // "ok" or "unhealthy"
	Users     []userHealth `json:"users"`
	Unhealthy []string     `json:"unhealthy,omitempty"` // users without a valid token
	Error     string       `json:"error,omitempty"`     // why Redis could not be read
}

// handleHealth serves /healthz: 200 when every user has a valid token in Redis (fresh,
// or stale while its renewal runs), else 503 naming the users that have none. The
// tokens are read from Redis, the fleet's source of truth, so every daemon sharing a
// Redis gives the same answer.
func (dm *daemon) handleHealth(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), healthTimeout)
	defer cancel()
	ans := healthAnswer{Status: "ok", Users: make([]userHealth, 0, len(dm.users))}
	if up, why := dm.redisState(); !up {
		ans.Error = "redis unreachable: " + why
	}
	now := time.Now()
	for _, u := range dm.users {
		h := userHealth{User: u}
		listed := false // in ans.Unhealthy already
		if ans.Error == "" {
			st, err := dm.deps.cache.Status(ctx, u)
			switch {
			case err != nil && ctx.Err() != nil:
				ans.Error = fmt.Sprintf("redis %s did not answer within %s", dm.cfg.redis.display, healthTimeout)
			case err != nil:
				ans.Error = dm.scrub.scrub(oneLine(err.Error()))
			default:
				h.State = string(st.State)
				if st.Token != nil {
					secs := math.Round(st.Token.Expiry.Sub(now).Seconds())
					h.ExpiresIn, h.Version = &secs, st.Token.Version
				}
				if bu := dm.desk.byName[u]; bu != nil {
					// A missing token of a Kite user is normal until the day's reminder
					// time: Kite expires every token at 06:00 IST.
					var unhealthy bool
					h.Broker = bu.kind()
					g, err := bu.grant(ctx)
					if err == nil && g != nil {
						h.Grant = string(g.State)
						if !g.RefreshExpiry.IsZero() && g.State == oauthbroker.StateActive {
							secs := math.Round(g.RefreshExpiry.Sub(now).Seconds())
							h.RefreshExpiresIn = &secs
						}
					}
					h.State, unhealthy, h.LoginURL = dm.desk.judge(u, st, g)
					if unhealthy {
						ans.Unhealthy = append(ans.Unhealthy, u)
						listed = true
					}
				}
			}
		}
		if ans.Error != "" {
			h.State = "unknown"
		}
		v := dm.view(u)
		if v.failing {
			h.Failing, h.Kind, h.Error = true, v.lastKind, v.lastErr
		}
		if !listed && h.State != string(tokencache.StateFresh) && h.State != string(tokencache.StateStale) && (h.Broker == "" || h.State == "unknown") {
			ans.Unhealthy = append(ans.Unhealthy, u)
		}
		ans.Users = append(ans.Users, h)
	}
	code := http.StatusOK
	if len(ans.Unhealthy) > 0 {
		ans.Status, code = "unhealthy", http.StatusServiceUnavailable
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(ans)
}
