package sitelab

import (
	"net"
	"net/netip"

	"meshroot/internal/lab"
)

// The virtual site's addresses, in one place. The concentrator's half is
// internal/lab.DefaultConcentratorAddrs (its fixed plan, which the endpoints' strongSwan and FRR
// are configured with); everything below either names those values or is the site's own.
//
//	what                              address                            namespace:interface
//	router WAN (QEMU eth0, WANMAC)    192.0.2.2/30, by DHCP (a static    hw:brwan ─ cwan ══ inet:site0
//	                                  lease: the endpoints expect the
//	                                  customer gateway at this address)
//	ISP gateway, DHCP server, DNS     192.0.2.1/30                       inet:site0
//	WAN host ("the internet")         198.18.0.1, TCP 8000, wanhost.example   inet:lo
//	reference cloud                   https://198.18.0.2:8443            inet:lo
//	endpoint 1 / endpoint 2           198.51.100.2 / 203.0.113.2         ep1:out0 / ep2:out0
//	tunnel 1 / tunnel 2 inside        169.254.10.0/30 / 169.254.11.0/30  endpoint .1, router .2
//	VPC, VPC host                     10.0.0.0/16, 10.0.0.10             vpc:br0
//	router LAN (QEMU eth1, LANMAC)    192.168.1.1/24 on br-lan           hw:brlan ─ clan ══ lan:eth0
//	LAN client                        192.168.1.100.. by DHCP (router)   lan:eth0
//	ASNs                              site 65000, concentrator 64512
//
// The WAN host is the concentrator's own (its internet namespace's loopback holds it): the
// site used to add 198.18.0.1 itself, which clashed with the concentrator's once the WAN cable
// moved to the concentrator's internet.
var (
	// ISPGateway is the ISP's router on the WAN segment (DHCP server and DNS), with the
	// segment's length.
	ISPGateway = netip.PrefixFrom(netip.MustParseAddr(lab.DefaultConcentratorAddrs.SiteGateway4), 30)
	// WANAddr is the address the ISP leases to the router's WAN port (WANMAC).
	WANAddr = netip.MustParseAddr(lab.DefaultConcentratorAddrs.SiteWAN4)
	// WANHost is "somewhere on the internet", reached from the LAN through the router's NAT.
	WANHost = netip.MustParseAddr(lab.DefaultConcentratorAddrs.WANHost4)
	// CloudAddr is the reference cloud.
	CloudAddr = netip.MustParseAddr("198.18.0.2")
	// Endpoints are the concentrator's two tunnel endpoints (outside addresses).
	Endpoints = [2]netip.Addr{
		netip.MustParseAddr(lab.DefaultConcentratorAddrs.EndpointOutside4[0]),
		netip.MustParseAddr(lab.DefaultConcentratorAddrs.EndpointOutside4[1]),
	}
	// VPCPrefix and VPCHost are the network behind the concentrator and a host in it.
	VPCPrefix = netip.MustParsePrefix("10.0.0.0/16")
	VPCHost   = netip.MustParseAddr(lab.DefaultConcentratorAddrs.VPCHost4)
	// RouterLAN is the router's default LAN address and LANPrefix its LAN.
	RouterLAN = netip.MustParseAddr("192.168.1.1")
	LANPrefix = netip.MustParsePrefix("192.168.1.0/24")
	// WANMAC and LANMAC are the router VM's NICs (eth0 WAN, eth1 LAN).
	WANMAC = net.HardwareAddr{0x52, 0x54, 0x00, 0x6d, 0x72, 0x01}
	LANMAC = net.HardwareAddr{0x52, 0x54, 0x00, 0x6d, 0x72, 0x02}
)

// The site's names, ports and numbers.
const (
	// WANHostName is the name the ISP's DNS answers with WANHost.
	WANHostName = "wanhost.example."
	// WANHostPort is where the WAN host's TCP service (it answers with the caller's address)
	// listens; VPCHostPort is the same service on the VPC host.
	WANHostPort = 8000
	VPCHostPort = 8000
	// CloudPort is the cloud's HTTPS port.
	CloudPort = 8443
	// StatusPort and PairingPort are the router's status API and pairing server on its LAN
	// address (firmware/device's).
	StatusPort  = 80
	PairingPort = 8080
	// SiteASN and ConcentratorASN are the two ends' AS numbers.
	SiteASN         = 65000
	ConcentratorASN = 64512
	// ConnectionID is the VPN connection's name in the profile and the logs.
	ConnectionID = "vpn-0a1b2c3d4e5f60718"
)
