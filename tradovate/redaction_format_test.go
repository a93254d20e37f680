package tradovate_test

// Formatting or logging credentials, options or an Authenticator never shows a secret.
import (
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/brokertoken/brokertoken/tradovate"
)

func TestFormattingCredentialsOrAuthenticatorHidesPasswords(t *testing.T) {
	cs, err := tradovate.NewCredentials(tradovate.Credential{Username: "u", Password: "hunter2-password", Sec: "api-secret-value"})
	if err != nil {
		t.Fatal(err)
	}
	opts := tradovate.Options{Credentials: cs, DeviceID: "d", Sec: "api-secret-value"}
	a, err := tradovate.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	var sb strings.Builder
	slog.New(slog.NewTextHandler(&sb, nil)).Info("x", "creds", cs, "auth", a, "opts", opts)
	for _, v := range []any{cs, *cs, a, opts} {
		for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q"} {
			out := fmt.Sprintf(verb, v)
			if strings.Contains(out, "hunter2-password") || strings.Contains(out, "api-secret-value") {
				t.Errorf("%s of %T reveals a secret: %.200s", verb, v, out)
			}
		}
	}
	if strings.Contains(sb.String(), "hunter2-password") || strings.Contains(sb.String(), "api-secret-value") {
		t.Errorf("slog reveals a secret: %s", sb.String())
	}
}
