package tunnel

import (
	"testing"
	"time"

	"meshroot/internal/lab"
	"meshroot/vpn/ike"
)

// TestLabDPD cuts the outside link between our tunnel and strongSwan (100 % loss on
// strongSwan's outside interface, both directions): detection comes within the configured DPD
// interval and timeout (fast failover first when traffic flows), each DPD action does what it
// says, and after the link is back restart re-establishes by itself, none resumes on the same
// SAs, and clear waits for the peer to initiate.
func TestLabDPD(t *testing.T) {
	const interval, timeout = 2 * time.Second, 6 * time.Second
	for _, tc := range []struct {
		name    string
		action  ike.DPDAction
		traffic bool
	}{
		{"restart", ike.DPDRestart, false},
		{"clear", ike.DPDClear, false},
		{"none", ike.DPDNone, false},
		{"restart-under-traffic", ike.DPDRestart, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			o := labOpts{
				ours: func(c *Config) {
					c.IKE.DPDInterval, c.IKE.DPDTimeout = interval, timeout
					c.IKE.RetryInterval, c.IKE.RetryMax = 500*time.Millisecond, 2*time.Second
					c.DPDAction = tc.action
				},
				// strongSwan keeps its SAs (no DPD) so that restart has to replace them and none
				// finds them...
				sw: func(c *lab.Conn) { c.DPDDelay = 0 },
			}
			if tc.action == ike.DPDClear {
				// ...except for clear: then strongSwan notices too and initiates again, which is
				// what our side waits for.
				o.sw = func(c *lab.Conn) {
					c.DPDDelay = 2 * time.Second
					c.Children[0].DPDAction, c.Children[0].StartAction = "restart", "none"
				}
				o.swCfg = func(c *lab.CharonConfig) {
					c.RetransmitTries, c.RetransmitTimeout, c.RetransmitBase = 2, 1, 1.5
				}
			}
			r := newLabRig(t, o)
			r.waitUp()
			a := r.p.Addrs
			if err := r.p.AHost.WaitPing(r.ctx(10*time.Second), "", a.BHost4); err != nil {
				t.Fatal(err)
			}
			first := r.tun.Status().IKE.SPIi
			var ping *pinger
			if tc.traffic {
				ping = startPing(t, r.p.AHost, a.BHost4, 100000, 50*time.Millisecond)
				time.Sleep(time.Second)
			} else {
				// Idle: let the kernel's MLD reports of a new interface pass (the only packets
				// an idle tunnel carries) before cutting.
				time.Sleep(3 * time.Second)
			}
			cutAt := time.Now()
			if err := r.p.B.Impair("out0", lab.Impairment{LossPercent: 100}); err != nil {
				t.Fatal(err)
			}
			var detect time.Duration
			r.waitFor(30*time.Second, "the DPD action", func() bool {
				for _, e := range r.events() {
					if e.Type == EventDPDAction && e.Time.After(cutAt) {
						detect = e.Time.Sub(cutAt)
						return true
					}
				}
				return false
			})
			var outOfService time.Duration
			for _, e := range r.events() {
				if e.Type == EventOutOfService && e.Time.After(cutAt) {
					outOfService = e.Time.Sub(cutAt)
					break
				}
			}
			t.Logf("%s: out of service %v, DPD action %v after the cut", tc.name, outOfService, detect)
			// Idle: IKE's DPD sends its first check after the interval without traffic and gives
			// up after the timeout. Under traffic the first check is the fast-failover probe.
			limit := interval + timeout
			if tc.traffic {
				limit = DefaultFailoverWindow + timeout
				if outOfService <= 0 || outOfService > timeout {
					t.Errorf("under traffic: out of service %v after the cut; want fast failover, well before the DPD timeout %v", outOfService, timeout)
				}
			} else if outOfService > 0 && outOfService < detect-time.Second {
				t.Errorf("idle: out of service %v after the cut, before the DPD action (%v); want no liveness probe on an idle tunnel", outOfService, detect)
			}
			if detect < timeout-500*time.Millisecond || detect > limit+2*time.Second {
				t.Errorf("DPD action %v after the cut; want within the configured interval+timeout (%v, plus scheduling slack)", detect, limit)
			}
			st := r.tun.Status()
			if tc.action == ike.DPDNone {
				if st.Phase1 != ike.StateEstablished || st.Usable {
					t.Errorf("none: phase1 %s, usable %v; want the SAs kept and the tunnel out of service", st.Phase1, st.Usable)
				}
			} else if st.IKE != nil && st.IKE.SPIi == first || st.Usable {
				t.Errorf("%s: IKE SA %+v, usable %v; want the old SAs deleted", tc.action, st.IKE, st.Usable)
			}
			if tc.action == ike.DPDClear {
				time.Sleep(interval)
				if st := r.tun.Status(); st.Phase1 != ike.StateDown {
					t.Errorf("clear: phase1 %s while the link is still cut; want Down (we do not initiate)", st.Phase1)
				}
			}

			restoredAt := time.Now()
			if err := r.p.B.Impair("out0", lab.Impairment{}); err != nil {
				t.Fatal(err)
			}
			r.waitFor(60*time.Second, "the tunnel back in service", r.tun.Usable)
			t.Logf("%s: back in service %v after the link came back", tc.name, time.Since(restoredAt))
			st = r.tun.Status()
			switch tc.action {
			case ike.DPDRestart:
				if st.IKE == nil || st.IKE.SPIi == first || !st.IKE.Initiator {
					t.Errorf("restart: IKE SA %+v; want a new one we initiated", st.IKE)
				}
			case ike.DPDNone:
				if st.IKE == nil || st.IKE.SPIi != first {
					t.Errorf("none: IKE SA %+v; want the one from before the cut", st.IKE)
				}
			case ike.DPDClear:
				if st.IKE == nil || st.IKE.Initiator {
					t.Errorf("clear: IKE SA %+v; want one strongSwan initiated", st.IKE)
				}
			}
			if err := r.p.AHost.WaitPing(r.ctx(20*time.Second), "", a.BHost4); err != nil {
				t.Fatal(err)
			}
			if ping != nil {
				ping.cmd.Process.Kill()
			}
		})
	}
}
