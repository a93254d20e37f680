package browser

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"testing"
	"time"
)

// Page is one tab of the browser.
type Page struct {
	b       *Browser
	session string
}

// Viewport is a screen size to emulate.
type Viewport struct {
	Width, Height int
	Scale         float64 // device pixels per CSS pixel
	Mobile        bool    // a phone: viewport meta tags apply, scrollbars overlay
}

// Phone is a common phone's screen.
var Phone = Viewport{Width: 390, Height: 844, Scale: 3, Mobile: true}

// NewPage opens a blank tab.
func (b *Browser) NewPage(t testing.TB) *Page {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var target struct {
		TargetID string `json:"targetId"`
	}
	if err := b.call(ctx, "", "Target.createTarget", map[string]any{"url": "about:blank"}, &target); err != nil {
		t.Fatalf("browser: %v", err)
	}
	var att struct {
		SessionID string `json:"sessionId"`
	}
	if err := b.call(ctx, "", "Target.attachToTarget", map[string]any{"targetId": target.TargetID, "flatten": true}, &att); err != nil {
		t.Fatalf("browser: %v", err)
	}
	return &Page{b: b, session: att.SessionID}
}

// SetViewport makes the page render as on a screen of v's size.
func (p *Page) SetViewport(ctx context.Context, v Viewport) error {
	return p.b.call(ctx, p.session, "Emulation.setDeviceMetricsOverride", map[string]any{
		"width": v.Width, "height": v.Height, "deviceScaleFactor": v.Scale, "mobile": v.Mobile}, nil)
}

// Navigate opens url and waits until the document it ends on (after redirects) has
// loaded.
func (p *Page) Navigate(ctx context.Context, url string) error {
	var nav struct {
		ErrorText string `json:"errorText"`
	}
	if err := p.b.call(ctx, p.session, "Page.navigate", map[string]any{"url": url}, &nav); err != nil {
		return err
	}
	if nav.ErrorText != "" {
		return fmt.Errorf("navigate to %s: %s", url, nav.ErrorText)
	}
	return p.WaitFor(ctx, `document.readyState === "complete" && location.href !== "about:blank"`)
}

// Eval evaluates a JavaScript expression in the page (awaiting a promise) and decodes
// its value, which must be JSON, into out (when not nil).
func (p *Page) Eval(ctx context.Context, expr string, out any) error {
	var res struct {
		Result struct {
			Type  string          `json:"type"`
			Value json.RawMessage `json:"value"`
		} `json:"result"`
		Exception *struct {
			Text      string `json:"text"`
			Exception *struct {
				Description string `json:"description"`
			} `json:"exception"`
		} `json:"exceptionDetails"`
	}
	err := p.b.call(ctx, p.session, "Runtime.evaluate", map[string]any{
		"expression": expr, "returnByValue": true, "awaitPromise": true}, &res)
	if err != nil {
		return err
	}
	if e := res.Exception; e != nil {
		msg := e.Text
		if e.Exception != nil && e.Exception.Description != "" {
			msg = e.Exception.Description
		}
		return fmt.Errorf("javascript: %s", msg)
	}
	if out == nil {
		return nil
	}
	if len(res.Result.Value) == 0 {
		return fmt.Errorf("javascript: the expression's value is %s, not JSON", res.Result.Type)
	}
	return json.Unmarshal(res.Result.Value, out)
}

// pollEvery is how often WaitFor evaluates its condition.
const pollEvery = 25 * time.Millisecond

// WaitFor evaluates a JavaScript condition until it is true or ctx ends. Evaluations
// that fail while a new document loads count as false.
func (p *Page) WaitFor(ctx context.Context, cond string) error {
	var last error
	for {
		var ok bool
		err := p.Eval(ctx, "!!("+cond+")", &ok)
		if err == nil && ok {
			return nil
		}
		if err != nil {
			last = err
		}
		select {
		case <-ctx.Done():
			if last != nil {
				return fmt.Errorf("waiting for %s: %w (last error: %v)", cond, ctx.Err(), last)
			}
			return fmt.Errorf("waiting for %s: %w", cond, ctx.Err())
		case <-time.After(pollEvery):
		}
	}
}

// Click clicks the element selector names, as a mouse would: it scrolls the element
// into view and presses and releases the left button at its centre. It fails when no
// element matches, when it has no size, or when another element covers its centre (a
// human could not click it).
func (p *Page) Click(ctx context.Context, selector string) error {
	var at struct {
		X, Y float64
		Err  string
	}
	js := `(() => {
		const e = document.querySelector(` + strconv.Quote(selector) + `);
		if (!e) return {err: "no element matches"};
		e.scrollIntoView({block: "center", inline: "center"});
		const r = e.getBoundingClientRect();
		if (r.width === 0 || r.height === 0) return {err: "the element has no size (hidden?)"};
		const x = r.left + r.width / 2, y = r.top + r.height / 2;
		if (x < 0 || y < 0 || x > innerWidth || y > innerHeight) return {err: "the element is outside the viewport"};
		const hit = document.elementFromPoint(x, y);
		if (!hit || !(hit === e || e.contains(hit))) return {err: "covered by " + (hit ? hit.outerHTML.slice(0, 80) : "nothing")};
		return {x: x, y: y};
	})()`
	if err := p.Eval(ctx, js, &at); err != nil {
		return fmt.Errorf("click %s: %w", selector, err)
	}
	if at.Err != "" {
		return fmt.Errorf("click %s: %s", selector, at.Err)
	}
	for _, typ := range []string{"mouseMoved", "mousePressed", "mouseReleased"} {
		params := map[string]any{"type": typ, "x": at.X, "y": at.Y}
		if typ != "mouseMoved" {
			params["button"], params["clickCount"] = "left", 1
		}
		if err := p.b.call(ctx, p.session, "Input.dispatchMouseEvent", params, nil); err != nil {
			return fmt.Errorf("click %s: %w", selector, err)
		}
	}
	return nil
}

// Type focuses the element selector names and types text into it, as a keyboard
// would insert it.
func (p *Page) Type(ctx context.Context, selector, text string) error {
	var focused bool
	js := `(() => { const e = document.querySelector(` + strconv.Quote(selector) + `);
		if (!e) return false; e.focus(); return document.activeElement === e; })()`
	if err := p.Eval(ctx, js, &focused); err != nil {
		return fmt.Errorf("type into %s: %w", selector, err)
	}
	if !focused {
		return fmt.Errorf("type into %s: no such element, or it cannot take the focus", selector)
	}
	return p.b.call(ctx, p.session, "Input.insertText", map[string]any{"text": text}, nil)
}

// URL returns the page's address.
func (p *Page) URL(ctx context.Context) (string, error) {
	var u string
	err := p.Eval(ctx, "location.href", &u)
	return u, err
}

// Text returns what the page shows: the body's innerText.
func (p *Page) Text(ctx context.Context) (string, error) {
	var s string
	err := p.Eval(ctx, `document.body ? document.body.innerText : ""`, &s)
	return s, err
}

// HTML returns the page's current DOM as HTML.
func (p *Page) HTML(ctx context.Context) (string, error) {
	var s string
	err := p.Eval(ctx, "document.documentElement.outerHTML", &s)
	return s, err
}

// ErrNoElement is returned by Attr when no element matches.
var ErrNoElement = errors.New("browser: no element matches")

// Attr returns an attribute of the element selector names.
func (p *Page) Attr(ctx context.Context, selector, name string) (string, error) {
	var v *string
	js := `(() => { const e = document.querySelector(` + strconv.Quote(selector) + `);
		return e ? e.getAttribute(` + strconv.Quote(name) + `) : null; })()`
	if err := p.Eval(ctx, js, &v); err != nil {
		return "", err
	}
	if v == nil {
		return "", ErrNoElement
	}
	return *v, nil
}

// ShowOnFailure logs, when t has failed by the end of the test, the address and text
// the page shows then: what a human would have seen.
func (p *Page) ShowOnFailure(t *testing.T) {
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		u, _ := p.URL(ctx)
		text, _ := p.Text(ctx)
		t.Logf("the browser shows %s:\n%s", u, text)
	})
}
