package sitelab

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"meshroot/provision/api"
	"meshroot/provision/identity"
	"meshroot/provision/onboard"
	"meshroot/provision/profile"
)

// DeviceConfig describes the customer's site in the cloud and the router's factory data.
type DeviceConfig struct {
	// SiteID and SiteName name the site in the cloud (defaults "site-1", "Virtual site").
	SiteID, SiteName string
	// Serial and Board are the router's (defaults "MR-VM-0001", "qemu-virt-arm64").
	Serial, Board string
	// WiFiSSID and Country are the site's settings (defaults "Meshroot", "DE").
	WiFiSSID, Country string
	// Iterations is the setup code's PBKDF2 count (default identity.DefaultIterations).
	Iterations int
}

// Device is a router as the factory made it and the customer's account prepared it: its
// factory data (for QEMU's fw_cfg), its label (what the app scans), and the setup the app hands
// over (the cloud claim and the site's Wi-Fi).
type Device struct {
	Serial  string
	SiteID  string
	Factory []byte
	Label   identity.Payload
	// QR is the label's payload as the app scans it (MR1:...).
	QR    string
	Code  identity.SetupCode
	Claim *api.Claim
	// Setup is what the app hands over after pairing.
	Setup onboard.Setup
	// VPN is the site's VPN section as the cloud holds it (PSKs as references).
	VPN *profile.VPN
	// PSKs are the tunnels' keys, in the cloud's secret store under VPN.Tunnels[i].PSKRef.
	PSKs [2]string
}

// Secrets are what must never show in the status API, the logs or in clear on the router's
// disk, by name.
func (d *Device) Secrets() map[string]string {
	m := map[string]string{"tunnel 1 PSK": d.PSKs[0], "tunnel 2 PSK": d.PSKs[1],
		"Wi-Fi passphrase": d.Setup.WiFiPassphrase, "setup code": d.Code.Digits()}
	if d.Claim != nil {
		m["claim token"] = d.Claim.Token
	}
	return m
}

// AddDevice prepares the cloud as the customer's operator would: a site whose profile
// carries the VPN connection to the concentrator's two endpoints (ASNs, inside /30s, the
// site's LAN prefix, the PSKs as secret references stored in the cloud's secret store), and a
// claim for one device; and makes that device's factory data and label.
func (s *Site) AddDevice(ctx context.Context, cfg DeviceConfig) (*Device, error) {
	if s.Op == nil {
		return nil, fmt.Errorf("sitelab: add device: the site has no cloud")
	}
	def := func(p *string, v string) {
		if *p == "" {
			*p = v
		}
	}
	def(&cfg.SiteID, "site-1")
	def(&cfg.SiteName, "Virtual site")
	def(&cfg.Serial, "MR-VM-0001")
	def(&cfg.Board, "qemu-virt-arm64")
	def(&cfg.WiFiSSID, "Meshroot")
	def(&cfg.Country, "DE")
	if cfg.Iterations == 0 {
		cfg.Iterations = identity.DefaultIterations
	}
	d := &Device{Serial: cfg.Serial, SiteID: cfg.SiteID}
	if _, err := s.Op.CreateSite(ctx, api.CreateSiteRequest{ID: cfg.SiteID, Name: cfg.SiteName, WiFiSSID: cfg.WiFiSSID, Country: cfg.Country}); err != nil {
		return nil, fmt.Errorf("sitelab: create site: %w", err)
	}
	vpn := &profile.VPN{ConnectionID: ConnectionID, Type: "ipsec.1",
		BGP:          &profile.BGP{CustomerASN: SiteASN, AmazonASN: ConcentratorASN, HoldTimeSeconds: 30},
		SitePrefixes: []string{LANPrefix.String()},
	}
	for i, t := range s.Conc.Tunnels() {
		ref := fmt.Sprintf("vpn/%s/%s", cfg.SiteID, t.Name)
		vpn.Tunnels = append(vpn.Tunnels, profile.Tunnel{OutsideAddress: t.Outside, InsideCIDR: t.Inside4, PSKRef: ref,
			Options: profile.DefaultTunnelOptions()})
		d.PSKs[i] = t.PSK
		if err := s.Op.PutSecret(ctx, ref, t.PSK); err != nil {
			return nil, fmt.Errorf("sitelab: secret %s: %w", ref, err)
		}
	}
	d.VPN = vpn
	raw, err := json.Marshal(vpn)
	if err != nil {
		return nil, err
	}
	if _, err := s.Op.PutVPN(ctx, cfg.SiteID, raw); err != nil {
		return nil, fmt.Errorf("sitelab: site %s vpn: %w", cfg.SiteID, err)
	}
	if d.Claim, err = s.Op.Claim(ctx, cfg.SiteID, time.Hour); err != nil {
		return nil, fmt.Errorf("sitelab: claim: %w", err)
	}
	if d.Code, err = identity.NewSetupCode(nil); err != nil {
		return nil, err
	}
	disc, err := identity.NewDiscriminator(nil)
	if err != nil {
		return nil, err
	}
	fac, label, err := identity.NewFactory(cfg.Serial, cfg.Board, d.Code, disc, cfg.Iterations, nil)
	if err != nil {
		return nil, err
	}
	d.Label = label
	if d.Factory, err = fac.Marshal(); err != nil {
		return nil, err
	}
	if d.QR, err = label.Encode(); err != nil {
		return nil, err
	}
	pass, err := NewPSK() // any random string does for the Wi-Fi passphrase
	if err != nil {
		return nil, err
	}
	d.Setup = onboard.Setup{ClaimToken: d.Claim.Token, CloudURL: d.Claim.CloudURL, CAPin: d.Claim.CAPin,
		SiteName: cfg.SiteName, WiFiSSID: cfg.WiFiSSID, WiFiPassphrase: pass, Country: cfg.Country}
	return d, nil
}
