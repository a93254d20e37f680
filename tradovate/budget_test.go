package tradovate_test

import (
	"context"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/brokertoken/brokertoken/internal/testutil"
	"github.com/brokertoken/brokertoken/internal/testutil/tradovatefake"
	"github.com/brokertoken/brokertoken/tradovate"
)

// maxInWindow returns the largest number of times that fall within any span shorter
// than window.
func maxInWindow(times []time.Time, window time.Duration) int {
	sorted := append([]time.Time(nil), times...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].Before(sorted[j]) })
	best := 0
	for i := range sorted {
		n := 0
		for j := i; j < len(sorted) && sorted[j].Sub(sorted[i]) < window; j++ {
			n++
		}
		best = max(best, n)
	}
	return best
}

// loginTimes returns when the fake received each login request.
func loginTimes(f *tradovatefake.Server) []time.Time {
	var out []time.Time
	for _, r := range f.Requests() {
		if r.Endpoint == tradovatefake.AccessTokenRequest || r.Endpoint == tradovatefake.Authorize {
			out = append(out, r.Time)
		}
	}
	return out
}

func TestLoginBudgetIsNeverExceededAcrossProcesses(t *testing.T) {
	t.Parallel()
	const (
		limit     = 4
		window    = time.Second
		processes = 4
		perProc   = 3
	)
	f := newFixture(t, tradovatefake.Options{}, processes*perProc)
	creds := f.credentials(t, nil)
	var auths []*tradovate.Authenticator
	for range processes {
		auths = append(auths, f.auth(t, creds, func(o *tradovate.Options) {
			o.LoginBudget, o.LoginBudgetWindow, o.LoginBudgetWait = limit, window, time.Minute
		}))
	}
	var wg sync.WaitGroup
	errs := make(chan error, processes*perProc)
	for p, a := range auths {
		for i := range perProc {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, err := a.Login(context.Background(), f.users[p*perProc+i])
				errs <- err
			}()
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	times := loginTimes(f.fake)
	require.Len(t, times, processes*perProc)
	// Requests reach the fake a little after their grant, so allow a small slack.
	assert.LessOrEqual(t, maxInWindow(times, window-100*time.Millisecond), limit)
}

func TestLoginBudgetExhaustedFailsClearly(t *testing.T) {
	t.Parallel()
	f := newFixture(t, tradovatefake.Options{}, 2)
	creds := f.credentials(t, nil)
	edit := func(o *tradovate.Options) { o.LoginBudget, o.LoginBudgetWindow, o.LoginBudgetWait = 1, time.Hour, -1 }
	first, second := f.auth(t, creds, edit), f.auth(t, creds, edit)
	ctx := context.Background()
	_, err := first.Login(ctx, f.users[0])
	require.NoError(t, err)

	_, err = second.Login(ctx, f.users[1])
	require.ErrorIs(t, err, tradovate.ErrLoginBudgetExhausted)
	assert.Contains(t, err.Error(), f.users[1])
	assert.Contains(t, err.Error(), "1 logins per 1h0m0s")
	assert.Equal(t, 0, f.fake.Calls(tradovatefake.Authorize, f.users[1]))
}

func TestLoginBudgetWaitIsBoundedByTheContext(t *testing.T) {
	t.Parallel()
	f := newFixture(t, tradovatefake.Options{}, 2)
	a := f.auth(t, f.credentials(t, nil), func(o *tradovate.Options) {
		o.LoginBudget, o.LoginBudgetWindow = 1, time.Hour
		o.LoginBudgetWait = 2 * time.Hour
	})
	_, err := a.Login(context.Background(), f.users[0])
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, err = a.Login(ctx, f.users[1])
	require.ErrorIs(t, err, tradovate.ErrLoginBudgetExhausted, "a wait past the deadline fails at once")
}

func TestLoginWaitsForTheBudget(t *testing.T) {
	t.Parallel()
	f := newFixture(t, tradovatefake.Options{}, 3)
	a := f.auth(t, f.credentials(t, nil), func(o *tradovate.Options) {
		o.LoginBudget, o.LoginBudgetWindow = 1, 300*time.Millisecond
	})
	for _, u := range f.users {
		_, err := a.Login(context.Background(), u)
		require.NoError(t, err)
	}
	assert.Len(t, loginTimes(f.fake), 3)
}

func TestLoginBudgetWithoutRedisLimitsTheProcess(t *testing.T) {
	t.Parallel()
	f := newFixture(t, tradovatefake.Options{}, 2)
	a := f.auth(t, f.credentials(t, nil), func(o *tradovate.Options) {
		o.Redis = nil
		o.LoginBudget, o.LoginBudgetWindow, o.LoginBudgetWait = 1, time.Hour, -1
	})
	_, err := a.Login(context.Background(), f.users[0])
	require.NoError(t, err)
	_, err = a.Login(context.Background(), f.users[1])
	require.ErrorIs(t, err, tradovate.ErrLoginBudgetExhausted)
}

func TestBudgetAndCooldownWorkOnRedisCluster(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("starts a Redis Cluster")
	}
	cluster := testutil.Cluster(t)
	fake := tradovatefake.New(t, tradovatefake.Options{})
	var list []tradovate.Credential
	var users []string
	for _, s := range []string{"a", "b", "c"} {
		u := cluster.Name(s)
		fake.AddUser(u, password(u))
		users = append(users, u)
		list = append(list, tradovate.Credential{Username: u, Password: password(u), Method: tradovate.MethodOfficial})
	}
	creds, err := tradovate.NewCredentials(list...)
	require.NoError(t, err)
	newAuth := func() *tradovate.Authenticator {
		a, err := tradovate.New(tradovate.Options{
			RESTURL: fake.RESTURL(), Credentials: creds, Redis: cluster.Client(t), Namespace: cluster.Prefix + ":tradovate",
			LoginBudget: 2, LoginBudgetWindow: time.Hour, LoginBudgetWait: -1, Logger: quietLogger(),
		})
		require.NoError(t, err)
		return a
	}
	first, second := newAuth(), newAuth()
	ctx := context.Background()

	fake.Script(tradovatefake.AccessTokenRequest, users[0], tradovatefake.Captcha())
	_, err = first.Login(ctx, users[0])
	require.ErrorIs(t, err, tradovate.ErrCaptchaRequired)
	_, err = second.Login(ctx, users[0])
	var cd *tradovate.CooldownError
	require.ErrorAs(t, err, &cd, "the cool-down is shared through the cluster")

	_, err = second.Login(ctx, users[1])
	require.NoError(t, err)
	_, err = first.Login(ctx, users[2])
	require.ErrorIs(t, err, tradovate.ErrLoginBudgetExhausted, "two logins spent the shared budget")
	assert.Equal(t, 2, fake.Calls(tradovatefake.AccessTokenRequest, ""))
}
