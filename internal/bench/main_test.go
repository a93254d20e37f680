package main

import (
	"testing"

	"go.uber.org/goleak"

	"github.com/brokertoken/brokertoken/internal/testutil"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m, testutil.LeakOptions()...) }
