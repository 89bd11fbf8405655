// Package wan brings up the router's uplink: a DHCPv4 client (github.com/insomniacslk/dhcp's
// nclient4) with renewal at T1, rebinding at T2 and expiry, or a static address from the stored
// configuration; the default route and the upstream DNS servers come from the lease (or the
// static settings). It follows the link: a cable pulled and plugged back (carrier lost and
// regained) makes the client confirm its lease at once, and a lease that expires while the
// upstream is gone is dropped and discovery starts over, without restarting anything.
//
// Kernel access (links, addresses, the default route) is the Kernel interface: Netlink is the
// real one, FakeKernel the unit tests'. The DHCP client is the DHCP interface: NewDHCP wraps
// nclient4 on a raw socket of the interface; tests give nclient4 an in-memory link.
package wan

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/nclient4"

	"meshroot/firmware"
)

// Modes.
const (
	ModeDHCP   = "dhcp"
	ModeStatic = "static"
)

// Phases of the uplink (State.Phase).
const (
	PhaseNoLink      = "no-link"     // the interface does not exist (yet)
	PhaseLinkDown    = "link-down"   // no carrier
	PhaseDiscovering = "discovering" // DHCP: looking for a server
	PhaseBound       = "bound"       // DHCP: lease in force
	PhaseRenewing    = "renewing"    // DHCP: past T1
	PhaseRebinding   = "rebinding"   // DHCP: past T2
	PhaseStatic      = "static"      // static address applied
)

// StaticConfig is a fixed uplink configuration.
type StaticConfig struct {
	Address netip.Prefix `json:"address"`
	Gateway netip.Addr   `json:"gateway"`
	DNS     []netip.Addr `json:"dns,omitempty"`
}

// Settings is the stored "wan" document.
type Settings struct {
	// Mode is "dhcp" (default) or "static".
	Mode   string        `json:"mode"`
	Static *StaticConfig `json:"static,omitempty"`
}

// Validate checks the settings, naming the bad field.
func (s Settings) Validate() error {
	switch s.Mode {
	case "", ModeDHCP:
		return nil
	case ModeStatic:
	default:
		return fmt.Errorf("wan: mode %q: want dhcp or static", s.Mode)
	}
	st := s.Static
	if st == nil {
		return errors.New("wan: static: required in static mode")
	}
	a := st.Address
	if !a.IsValid() || !a.Addr().Is4() || a.Bits() < 1 || a.Bits() > 31 || a.Addr() == a.Masked().Addr() {
		return fmt.Errorf("wan: static.address %v: want an IPv4 host address with its prefix length", a)
	}
	if !st.Gateway.Is4() || !a.Masked().Contains(st.Gateway) || st.Gateway == a.Addr() {
		return fmt.Errorf("wan: static.gateway %v: want another address on %s", st.Gateway, a.Masked())
	}
	for i, d := range st.DNS {
		if !d.IsValid() || d.IsUnspecified() {
			return fmt.Errorf("wan: static.dns[%d] %v: want an address", i, d)
		}
	}
	return nil
}

// Config configures the uplink.
type Config struct {
	// Interface is the WAN port.
	Interface string
	// Settings are the mode and static configuration.
	Settings Settings
	// Hostname is sent to the DHCP server (option 12).
	Hostname string
	// ResolvConf, when set, is rewritten with the upstream DNS servers (the router's own
	// resolver; LAN clients use the router's forwarder).
	ResolvConf string
	// LinkPoll is how often the link is checked (default 1 s).
	LinkPoll time.Duration
	// Retry is the first pause between failed discoveries (default 2 s, doubling to 1 min).
	Retry time.Duration
	// Kernel and NewDHCP default to Netlink and NewDHCP.
	Kernel  Kernel
	NewDHCP func(ifname string, hw net.HardwareAddr) (DHCP, error)
	Logger  *slog.Logger
}

// State is the uplink as the status API shows it.
type State struct {
	Interface string `json:"interface"`
	Mode      string `json:"mode"`
	Phase     string `json:"phase"`
	// Address is the WAN address with its prefix length (invalid when none).
	Address netip.Prefix `json:"address,omitzero"`
	Gateway netip.Addr   `json:"gateway,omitzero"`
	DNS     []netip.Addr `json:"dns,omitempty"`
	// Server is the DHCP server; LeaseExpires, T1 and T2 its lease's times.
	Server       netip.Addr `json:"dhcp_server,omitzero"`
	LeaseExpires time.Time  `json:"lease_expires,omitzero"`
	Renew        time.Time  `json:"renew_at,omitzero"`
	Rebind       time.Time  `json:"rebind_at,omitzero"`
	// Since is when the phase began.
	Since time.Time `json:"since"`
	// Leases counts leases obtained (discoveries and renewals); LinkLosses carrier losses.
	Leases     int    `json:"leases"`
	LinkLosses int    `json:"link_losses"`
	LastError  string `json:"last_error,omitempty"`
}

// Up reports whether the uplink has an address and a default route.
func (s State) Up() bool {
	return s.Address.IsValid() && (s.Phase == PhaseBound || s.Phase == PhaseRenewing || s.Phase == PhaseRebinding || s.Phase == PhaseStatic)
}

// Service runs the uplink.
type Service struct {
	cfg Config
	log *slog.Logger

	mu    sync.Mutex
	state State
	lease *nclient4.Lease
	subs  []func(State)
}

// New checks the configuration.
func New(cfg Config) (*Service, error) {
	if cfg.Interface == "" || len(cfg.Interface) > 15 {
		return nil, fmt.Errorf("wan: interface %q: want 1..15 bytes", cfg.Interface)
	}
	if err := cfg.Settings.Validate(); err != nil {
		return nil, err
	}
	if cfg.Settings.Mode == "" {
		cfg.Settings.Mode = ModeDHCP
	}
	if cfg.LinkPoll <= 0 {
		cfg.LinkPoll = time.Second
	}
	if cfg.Retry <= 0 {
		cfg.Retry = 2 * time.Second
	}
	if cfg.Kernel == nil {
		cfg.Kernel = Netlink{}
	}
	if cfg.NewDHCP == nil {
		cfg.NewDHCP = NewDHCP
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Service{cfg: cfg, log: cfg.Logger.With("service", "wan")}
	s.state = State{Interface: cfg.Interface, Mode: cfg.Settings.Mode, Phase: PhaseNoLink, Since: time.Now()}
	return s, nil
}

// State returns the uplink's state.
func (s *Service) State() State {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.state
	st.DNS = slices.Clone(st.DNS)
	return st
}

// Upstreams returns the upstream DNS servers in force (for the forwarder).
func (s *Service) Upstreams() []netip.Addr { return s.State().DNS }

// Subscribe calls fn after every state change (from the service's goroutine; keep it short).
func (s *Service) Subscribe(fn func(State)) {
	s.mu.Lock()
	s.subs = append(s.subs, fn)
	s.mu.Unlock()
}

func (s *Service) update(f func(*State)) {
	s.mu.Lock()
	old := s.state.Phase
	f(&s.state)
	if s.state.Phase != old {
		s.state.Since = time.Now()
	}
	st := s.state
	subs := slices.Clone(s.subs)
	s.mu.Unlock()
	for _, fn := range subs {
		fn(st)
	}
}

func (s *Service) phase(p string) { s.update(func(st *State) { st.Phase = p }) }

// Run brings the uplink up and keeps it up until ctx ends; it calls up as soon as it is
// watching the link (an uplink without a cable is a normal state, not a failure). On the way
// out it releases nothing (a router keeps its lease across a restart) but removes the address
// and route it added.
func (s *Service) Run(ctx context.Context, up func()) error {
	up()
	defer s.unapply()
	for ctx.Err() == nil {
		hw, ok := s.waitLink(ctx)
		if !ok {
			return nil
		}
		var err error
		if s.cfg.Settings.Mode == ModeStatic {
			err = s.runStatic(ctx)
		} else {
			err = s.runDHCP(ctx, hw)
		}
		if err != nil && ctx.Err() == nil {
			s.log.Warn("wan: uplink lost", "err", err)
			s.update(func(st *State) { st.LastError = err.Error() })
		}
	}
	return nil
}

// waitLink waits until the interface exists, is set up and has a carrier.
func (s *Service) waitLink(ctx context.Context) (net.HardwareAddr, bool) {
	k := s.cfg.Kernel
	logged := ""
	for {
		li, err := k.Link(s.cfg.Interface)
		switch {
		case errors.Is(err, ErrNoLink):
			if logged != PhaseNoLink {
				s.log.Warn("wan: interface not present (yet)", "interface", s.cfg.Interface)
				logged = PhaseNoLink
			}
			s.phase(PhaseNoLink)
		case err != nil:
			s.log.Error("wan: cannot read the link", "err", err)
		case !li.Up:
			if err := k.SetUp(s.cfg.Interface); err != nil {
				s.log.Error("wan: cannot set the link up", "err", err)
			}
			continue
		case !li.Carrier:
			if logged != PhaseLinkDown {
				s.log.Info("wan: no carrier (cable unplugged?)", "interface", s.cfg.Interface)
				logged = PhaseLinkDown
			}
			s.phase(PhaseLinkDown)
		default:
			return li.MAC, true
		}
		if !sleep(ctx, s.cfg.LinkPoll) {
			return nil, false
		}
	}
}

// carrier reports whether the link still has a carrier.
func (s *Service) carrier() bool {
	li, err := s.cfg.Kernel.Link(s.cfg.Interface)
	return err == nil && li.Up && li.Carrier
}

func (s *Service) runStatic(ctx context.Context) error {
	st := s.cfg.Settings.Static
	if err := s.apply(st.Address, st.Gateway, st.DNS); err != nil {
		return err
	}
	s.update(func(x *State) { x.Phase = PhaseStatic; x.LastError = "" })
	s.log.Info("wan up (static)", "address", st.Address.String(), "gateway", st.Gateway.String())
	for sleep(ctx, s.cfg.LinkPoll) {
		if !s.carrier() {
			s.update(func(x *State) { x.LinkLosses++ })
			return errors.New("carrier lost")
		}
	}
	return nil
}

// runDHCP gets a lease and keeps it until the link goes, the lease is lost, or ctx ends.
func (s *Service) runDHCP(ctx context.Context, hw net.HardwareAddr) error {
	c, err := s.cfg.NewDHCP(s.cfg.Interface, hw)
	if err != nil {
		return fmt.Errorf("dhcp client: %w", err)
	}
	defer c.Close()
	mods := []dhcpv4.Modifier{}
	if s.cfg.Hostname != "" {
		mods = append(mods, dhcpv4.WithOption(dhcpv4.OptHostName(s.cfg.Hostname)))
	}
	lease := s.currentLease()
	if lease != nil {
		// The link came back with a lease in force: confirm it at once (RFC 2131 3.2's
		// INIT-REBOOT, done as a renewal so the address stays up while the server answers).
		lease = s.confirm(ctx, c, lease, mods)
	}
	delay := s.cfg.Retry
	for lease == nil {
		s.phase(PhaseDiscovering)
		rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		l, err := c.Request(rctx, mods...)
		cancel()
		if ctx.Err() != nil {
			return nil
		}
		if err == nil {
			if err = s.bind(l); err == nil {
				lease = l
				break
			}
		}
		s.update(func(st *State) { st.LastError = "discover: " + err.Error() })
		s.log.Warn("wan: no DHCP lease yet", "err", err, "retry_in", delay.String())
		if !s.sleepWatching(ctx, delay) {
			return errors.New("carrier lost while discovering")
		}
		delay = min(delay*2, time.Minute)
	}
	for {
		st := s.State()
		now := time.Now()
		var wait time.Duration
		rebinding := false
		switch {
		case !now.Before(st.LeaseExpires):
			s.log.Warn("wan: lease expired; starting over", "address", st.Address.String())
			s.unapply()
			s.setLease(nil)
			return errors.New("lease expired")
		case !now.Before(st.Rebind):
			if st.Phase != PhaseRebinding {
				s.phase(PhaseRebinding)
			}
			rebinding = true
			wait = retryWait(st.LeaseExpires.Sub(now))
		case !now.Before(st.Renew):
			if st.Phase != PhaseRenewing {
				s.phase(PhaseRenewing)
			}
			wait = retryWait(st.Rebind.Sub(now))
		default:
			if !s.sleepWatching(ctx, st.Renew.Sub(now)) {
				if ctx.Err() != nil {
					return nil
				}
				return s.linkLost()
			}
			continue
		}
		// Renewing or rebinding: one exchange now, then wait half the remaining time.
		rctx, cancel := context.WithTimeout(ctx, min(wait, 10*time.Second))
		var nl *nclient4.Lease
		if rebinding {
			nl, err = c.Rebind(rctx, lease, mods...)
		} else {
			nl, err = c.Renew(rctx, lease, mods...)
		}
		cancel()
		if ctx.Err() != nil {
			return nil
		}
		var nak *nclient4.ErrNak
		switch {
		case errors.As(err, &nak):
			s.log.Warn("wan: server refused the lease (NAK); starting over", "address", st.Address.String())
			s.unapply()
			s.setLease(nil)
			return errors.New("lease refused")
		case err != nil:
			s.update(func(x *State) { x.LastError = x.Phase + ": " + err.Error() })
			if !s.sleepWatching(ctx, wait) {
				if ctx.Err() != nil {
					return nil
				}
				return s.linkLost()
			}
		default:
			if err := s.bind(nl); err != nil {
				return err
			}
			lease = nl
		}
	}
}

func (s *Service) linkLost() error {
	s.update(func(st *State) { st.LinkLosses++; st.Phase = PhaseLinkDown })
	return errors.New("carrier lost")
}

// confirm renews a lease kept across a link loss; it returns nil (discover again) when the
// lease is gone, refused or unconfirmed and expired.
func (s *Service) confirm(ctx context.Context, c DHCP, lease *nclient4.Lease, mods []dhcpv4.Modifier) *nclient4.Lease {
	st := s.State()
	if !time.Now().Before(st.LeaseExpires) {
		s.unapply()
		s.setLease(nil)
		return nil
	}
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	nl, err := c.Rebind(rctx, lease, mods...)
	var nak *nclient4.ErrNak
	switch {
	case errors.As(err, &nak):
		s.log.Warn("wan: lease refused after the link came back; starting over")
		s.unapply()
		s.setLease(nil)
		return nil
	case err != nil:
		// No answer: keep the lease in force until its times say otherwise.
		s.update(func(x *State) { x.Phase = PhaseBound; x.LastError = "confirm: " + err.Error() })
		return lease
	}
	if err := s.bind(nl); err != nil {
		return nil
	}
	return nl
}

// sleepWatching sleeps d, checking the carrier; false when it was lost or ctx ended.
func (s *Service) sleepWatching(ctx context.Context, d time.Duration) bool {
	end := time.Now().Add(d)
	for {
		left := time.Until(end)
		if left <= 0 {
			return true
		}
		if !sleep(ctx, min(left, s.cfg.LinkPoll)) {
			return false
		}
		if !s.carrier() {
			return false
		}
	}
}

// maxLease caps the lease length the uplink plans with.
const maxLease = 7 * 24 * time.Hour

// retryWait is RFC 2131 4.4.5's "half the remaining time" (at least 1 s, at most 60 s: a
// router should notice a returning upstream within a minute).
func retryWait(left time.Duration) time.Duration {
	return min(max(left/2, time.Second), time.Minute)
}

// currentLease is the lease in force (kept across a link loss), or nil.
func (s *Service) currentLease() *nclient4.Lease {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lease
}

func (s *Service) setLease(l *nclient4.Lease) {
	s.mu.Lock()
	s.lease = l
	s.mu.Unlock()
	if l == nil {
		s.update(func(st *State) {
			st.Server, st.LeaseExpires, st.Renew, st.Rebind = netip.Addr{}, time.Time{}, time.Time{}, time.Time{}
		})
	}
}

// bind applies a lease: address, default route, DNS, times.
func (s *Service) bind(l *nclient4.Lease) error {
	ack := l.ACK
	ip, ok := netip.AddrFromSlice(ack.YourIPAddr.To4())
	if !ok || ip.IsUnspecified() {
		return errors.New("lease without an address")
	}
	bits := 24
	if m := ack.SubnetMask(); m != nil {
		if ones, size := m.Size(); size == 32 && ones > 0 {
			bits = ones
		}
	}
	addr := netip.PrefixFrom(ip, bits)
	var gw netip.Addr
	if r := ack.Router(); len(r) > 0 {
		gw, _ = netip.AddrFromSlice(r[0].To4())
	}
	var dns []netip.Addr
	for _, d := range ack.DNS() {
		if a, ok := netip.AddrFromSlice(d.To4()); ok && !a.IsUnspecified() {
			dns = append(dns, a)
		}
	}
	first := s.State().Address != addr
	if err := s.apply(addr, gw, dns); err != nil {
		return err
	}
	now := l.CreationTime
	if now.IsZero() {
		now = time.Now()
	}
	lt := ack.IPAddressLeaseTime(time.Hour)
	if lt <= 0 {
		lt = time.Hour
	}
	// An "infinite" (0xffffffff) or very long lease is still confirmed weekly.
	lt = min(lt, maxLease)
	t1 := ack.IPAddressRenewalTime(lt / 2)
	t2 := ack.IPAddressRebindingTime(lt / 8 * 7)
	if t1 <= 0 || t1 >= lt {
		t1 = lt / 2
	}
	if t2 <= t1 || t2 >= lt {
		t2 = max(lt/8*7, t1+(lt-t1)/2)
	}
	server, _ := netip.AddrFromSlice(ack.ServerIdentifier().To4())
	s.setLease(l)
	s.update(func(st *State) {
		st.Phase, st.Server, st.LastError = PhaseBound, server, ""
		st.LeaseExpires, st.Renew, st.Rebind = now.Add(lt), now.Add(t1), now.Add(t2)
		st.Leases++
	})
	if first {
		s.log.Info("wan up (dhcp)", "address", addr.String(), "gateway", gw.String(), "dns", dns, "server", server.String(), "lease", lt.String())
	} else {
		s.log.Debug("wan: lease renewed", "address", addr.String(), "lease", lt.String())
	}
	return nil
}

// apply sets the address, default route and DNS, replacing earlier ones.
func (s *Service) apply(addr netip.Prefix, gw netip.Addr, dns []netip.Addr) error {
	k := s.cfg.Kernel
	old := s.State()
	if old.Address.IsValid() && old.Address != addr {
		if err := k.DelAddr(s.cfg.Interface, old.Address); err != nil {
			s.log.Warn("wan: cannot remove the old address", "address", old.Address.String(), "err", err)
		}
	}
	if err := k.AddAddr(s.cfg.Interface, addr); err != nil {
		return fmt.Errorf("wan: address %s: %w", addr, err)
	}
	if gw.IsValid() {
		if err := k.ReplaceDefaultRoute(s.cfg.Interface, gw); err != nil {
			return fmt.Errorf("wan: default route via %s: %w", gw, err)
		}
	}
	s.update(func(st *State) { st.Address, st.Gateway, st.DNS = addr, gw, slices.Clone(dns) })
	if s.cfg.ResolvConf != "" && !slices.Equal(old.DNS, dns) {
		if err := writeResolvConf(s.cfg.ResolvConf, dns); err != nil {
			s.log.Warn("wan: cannot write resolv.conf", "err", err)
		}
	}
	return nil
}

// unapply removes the address and default route this service added.
func (s *Service) unapply() {
	st := s.State()
	if !st.Address.IsValid() {
		return
	}
	k := s.cfg.Kernel
	if st.Gateway.IsValid() {
		if err := k.DelDefaultRoute(s.cfg.Interface); err != nil {
			s.log.Debug("wan: remove default route", "err", err)
		}
	}
	if err := k.DelAddr(s.cfg.Interface, st.Address); err != nil {
		s.log.Debug("wan: remove address", "err", err)
	}
	s.update(func(x *State) { x.Address, x.Gateway, x.DNS = netip.Prefix{}, netip.Addr{}, nil })
}

func writeResolvConf(path string, dns []netip.Addr) error {
	var b strings.Builder
	b.WriteString("# written by meshd (wan)\n")
	for _, d := range dns {
		fmt.Fprintf(&b, "nameserver %s\n", d)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return firmware.WriteFileAtomic(path, []byte(b.String()), 0o644)
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
