package main

import (
	"time"

	"github.com/richardartoul/gobuildcache/internal/toxiproxy"
)

// rttProxy is the proxy in front of MinIO: it adds a round-trip time to
// every request, as a latency toxic of half of it on each direction.
type rttProxy struct {
	*toxiproxy.Proxy
	rtt time.Duration // the round trip added now
}

// setRTT makes the proxy add rtt to every round trip (nothing for 0).
func (p *rttProxy) setRTT(rtt time.Duration) error {
	if rtt == p.rtt {
		return nil
	}
	for _, stream := range []string{"upstream", "downstream"} {
		name := "rtt_" + stream
		if p.rtt > 0 {
			if err := p.RemoveToxic(name); err != nil {
				return err
			}
		}
		if rtt > 0 {
			attrs := map[string]any{"latency": (rtt / 2).Milliseconds(), "jitter": 0}
			if err := p.AddToxic(name, "latency", stream, 1, attrs); err != nil {
				return err
			}
		}
	}
	p.rtt = rtt
	return nil
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "..." + s[len(s)-n:]
}
