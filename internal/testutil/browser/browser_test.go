package browser_test

import (
	"context"
	"fmt"
	"html"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/brokertoken/brokertoken/internal/testutil"
	"github.com/brokertoken/brokertoken/internal/testutil/browser"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m, testutil.LeakOptions()...) }

// A form filled in and submitted with real key and mouse events reaches the server,
// the browser follows the redirect, and a covered or hidden button cannot be clicked.
func TestFormSubmittedWithMouseAndKeyboard(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /form", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, `<!doctype html><meta name="viewport" content="width=device-width, initial-scale=1">
<form method="post" action="/submit"><input id="name" name="name"><button id="go">Send</button></form>
<div style="position:relative;height:3em"><button id="covered">Under</button>
<div style="position:absolute;inset:0;background:#fff"></div></div>
<button id="hidden" style="display:none">Hidden</button>`)
	})
	got := make(chan string, 1)
	mux.HandleFunc("POST /submit", func(w http.ResponseWriter, r *http.Request) {
		got <- r.FormValue("name")
		http.Redirect(w, r, "/done?name="+r.FormValue("name"), http.StatusSeeOther)
	})
	mux.HandleFunc("GET /done", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "<!doctype html><p id=done>Hello %s</p>", html.EscapeString(r.URL.Query().Get("name")))
	})
	srv := httptest.NewServer(mux)
	defer srv.Close()

	b := browser.Start(t)
	p := b.NewPage(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	require.NoError(t, p.SetViewport(ctx, browser.Phone))
	require.NoError(t, p.Navigate(ctx, srv.URL+"/form"))

	err := p.Click(ctx, "#covered")
	require.Error(t, err)
	assert.Contains(t, err.Error(), "covered by")
	err = p.Click(ctx, "#hidden")
	require.Error(t, err)
	assert.Contains(t, err.Error(), "no size")
	require.ErrorContains(t, p.Click(ctx, "#nothing"), "no element matches")

	require.NoError(t, p.Type(ctx, "#name", "Zoë <b>"))
	require.NoError(t, p.Click(ctx, "#go"))
	select {
	case name := <-got:
		assert.Equal(t, "Zoë <b>", name)
	case <-ctx.Done():
		t.Fatal("the form was not submitted")
	}
	require.NoError(t, p.WaitFor(ctx, `document.querySelector("#done")`))
	text, err := p.Text(ctx)
	require.NoError(t, err)
	assert.Equal(t, "Hello Zoë <b>", strings.TrimSpace(text))
	u, err := p.URL(ctx)
	require.NoError(t, err)
	assert.True(t, strings.HasPrefix(u, srv.URL+"/done?"), u)
	_, err = p.Attr(ctx, "#none", "id")
	assert.ErrorIs(t, err, browser.ErrNoElement)
}
