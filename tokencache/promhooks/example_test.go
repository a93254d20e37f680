package promhooks_test

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/redis/go-redis/v9"

	"github.com/brokertoken/brokertoken/tokencache"
	"github.com/brokertoken/brokertoken/tokencache/promhooks"
)

type exampleBroker struct{}

func (exampleBroker) Login(context.Context, string) (*tokencache.Token, error) {
	return &tokencache.Token{AccessToken: "token", Expiry: time.Now().Add(time.Hour)}, nil
}

func ExampleNew() {
	m := miniredis.NewMiniRedis() // stands in for your Redis
	if err := m.Start(); err != nil {
		panic(err)
	}
	defer m.Close()
	rdb := redis.NewClient(&redis.Options{Addr: m.Addr()})
	defer rdb.Close()

	reg := prometheus.NewRegistry()
	metrics, err := promhooks.New(promhooks.Options{Registerer: reg})
	if err != nil {
		panic(err)
	}
	cache, err := tokencache.New(tokencache.Options{Redis: rdb, Authenticator: exampleBroker{}, Hooks: metrics.Hooks()})
	if err != nil {
		panic(err)
	}
	defer cache.Close()
	mux := http.NewServeMux() // your service's
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))

	if _, err := cache.Token(context.Background(), "APEX_272045"); err != nil {
		panic(err)
	}
	families, _ := reg.Gather()
	for _, f := range families {
		if f.GetName() == "brokertoken_logins_total" {
			fmt.Println(f.GetName(), f.GetMetric()[0].GetCounter().GetValue())
		}
	}
	// Output: brokertoken_logins_total 1
}
