package tradovatefake

import (
	"net/http"
	"slices"
	"strconv"
	"time"
)

// account is one trading account of a user, as the broker lists it.
type account struct {
	id   int64
	name string
}

// SetAccounts replaces user's trading accounts with names, in that order (a name given
// twice counts once): what both account lists answer from now on. A user has no accounts until given some. Accounts
// keep their numeric id while they exist; a name given again after its removal gets a
// new one.
func (s *Server) SetAccounts(user string, names ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	old := s.accounts[user]
	list := make([]account, 0, len(names))
	for _, n := range names {
		if slices.ContainsFunc(list, func(a account) bool { return a.name == n }) {
			continue
		}
		if i := slices.IndexFunc(old, func(a account) bool { return a.name == n }); i >= 0 {
			list = append(list, old[i])
			continue
		}
		s.nextAccountID++
		list = append(list, account{id: s.nextAccountID, name: n})
	}
	s.accounts[user] = list
}

// AddAccount gives user one more trading account (at the end of its list), unless it
// has it already: the prop firm opened an account.
func (s *Server) AddAccount(user, name string) {
	s.SetAccounts(user, append(s.Accounts(user), name)...)
}

// RemoveAccount takes name from user's trading accounts: the prop firm closed it. The
// account lists no longer show it.
func (s *Server) RemoveAccount(user, name string) {
	s.SetAccounts(user, slices.DeleteFunc(s.Accounts(user), func(n string) bool { return n == name })...)
}

// Accounts returns the names of user's trading accounts, in list order.
func (s *Server) Accounts(user string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]string, 0, len(s.accounts[user]))
	for _, a := range s.accounts[user] {
		out = append(out, a.name)
	}
	return out
}

// handleAccountList serves the official GET {REST}/account/list: every Account entity
// of the token's user, as a JSON array, 401 for a token the broker does not accept.
func (s *Server) handleAccountList(w http.ResponseWriter, r *http.Request) {
	bearer, req, ok := s.bearerRequest(w, r, AccountList)
	if !ok {
		return
	}
	s.serve(w, r, req, "", func(w http.ResponseWriter) {
		s.mu.Lock()
		defer s.mu.Unlock()
		ti := s.restToken(bearer, time.Now())
		if ti == nil {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		u := s.users[ti.user]
		list := make([]map[string]any, 0, len(s.accounts[u.name]))
		for _, a := range s.accounts[u.name] {
			// The fields of the partner docs' Account entity, including the ones a
			// client must ignore.
			list = append(list, map[string]any{
				"id": a.id, "name": a.name, "userId": u.id, "accountType": "Customer", "active": true,
				"clearingHouseId": 2, "riskCategoryId": 2, "autoLiqProfileId": 2,
				"marginAccountType": "Speculator", "legalStatus": "Individual", "archived": false,
				"timestamp": "2024-01-02T03:04:05Z", "evaluationSize": 50000,
			})
		}
		writeJSON(w, http.StatusOK, list)
	})
}

// handleTVAccounts serves the TradingView-style GET {TV}/accounts?locale=en:
// {"s":"ok","d":[{"id":"D<n>","name":...,"type":"demo","currency":"USD"}]} for the
// token's user, 401 for a token the broker does not accept.
func (s *Server) handleTVAccounts(w http.ResponseWriter, r *http.Request) {
	bearer, req, ok := s.bearerRequest(w, r, TVAccounts)
	if !ok {
		return
	}
	s.serve(w, r, req, "", func(w http.ResponseWriter) {
		s.mu.Lock()
		defer s.mu.Unlock()
		ti := s.restToken(bearer, time.Now())
		if ti == nil {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		list := make([]map[string]any, 0, len(s.accounts[ti.user]))
		for _, a := range s.accounts[ti.user] {
			list = append(list, map[string]any{
				"id": "D" + strconv.FormatInt(a.id, 10), "name": a.name, "type": "demo", "currency": "USD", "currencySign": "$",
			})
		}
		writeJSON(w, http.StatusOK, map[string]any{"s": "ok", "d": list})
	})
}
