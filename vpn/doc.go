// Package vpn is the site-to-site VPN to a concentrator (the AWS Site-to-Site VPN contract): a
// connection of two tunnels, each an IKEv2 SA (vpn/ike) with a CHILD SA carried by the userspace
// ESP data plane over a TUN device (vpn/esp), BGP over each tunnel (vpn/bgp), learned routes into
// the kernel (vpn/route), failover, and logs in the concentrator's schema. vpn/awsconfig imports
// AWS's CustomerGatewayConfiguration document. vpn never imports provision: the firmware turns a
// verified site profile into a vpn.Config.
package vpn
