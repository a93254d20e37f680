package tradovate

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
)

// Environment selects Tradovate's demo or live hosts.
type Environment string

// The environments Tradovate runs.
const (
	// Demo is the simulation environment (the default).
	Demo Environment = "demo"
	// Live is the real-money environment.
	Live Environment = "live"
)

// Base URLs of each environment. Options.RESTURL and Options.TradingViewURL override them.
const (
	DemoRESTURL        = "https://demo.tradovateapi.com/v1"
	LiveRESTURL        = "https://live.tradovateapi.com/v1"
	DemoTradingViewURL = "https://tv-demo.tradovateapi.com"
	LiveTradingViewURL = "https://tv-live.tradovateapi.com"
)

// urls returns the environment's REST and TradingView base URLs.
func (e Environment) urls() (rest, tv string, err error) {
	switch e {
	case Demo:
		return DemoRESTURL, DemoTradingViewURL, nil
	case Live:
		return LiveRESTURL, LiveTradingViewURL, nil
	}
	return "", "", fmt.Errorf("tradovate: unknown environment %q (want %q or %q)", string(e), Demo, Live)
}

// Method is how a user logs in.
type Method string

// The login methods.
const (
	// MethodOfficial is POST {REST}/auth/accesstokenrequest with a JSON body (name,
	// password and the API key fields appId, appVersion, cid, sec, deviceId).
	MethodOfficial Method = "official"
	// MethodTradingView is the TradingView-style form login POST {TV}/authorize?locale=en
	// that the original system uses.
	MethodTradingView Method = "tradingview"
)

func (m Method) valid() bool { return m == "" || m == MethodOfficial || m == MethodTradingView }

// CID is an API key's client id. Configuration may give it as a JSON number or string;
// it is sent as a JSON number when it parses as an integer, else as a string.
type CID string

// UnmarshalJSON accepts a JSON number or string.
func (c *CID) UnmarshalJSON(b []byte) error {
	s := strings.TrimSpace(string(b))
	if s == "null" {
		*c = ""
		return nil
	}
	if strings.HasPrefix(s, `"`) {
		var v string
		if err := json.Unmarshal(b, &v); err != nil {
			return err
		}
		*c = CID(v)
		return nil
	}
	var n json.Number
	if err := json.Unmarshal(b, &n); err != nil {
		return fmt.Errorf("cid must be a number or a string")
	}
	*c = CID(n.String())
	return nil
}

// MarshalJSON writes a JSON number when c is an integer, else a JSON string.
func (c CID) MarshalJSON() ([]byte, error) {
	if n, ok := c.number(); ok {
		return []byte(strconv.FormatInt(n, 10)), nil
	}
	return json.Marshal(string(c))
}

func (c CID) number() (int64, bool) {
	n, err := strconv.ParseInt(strings.TrimSpace(string(c)), 10, 64)
	return n, err == nil
}
