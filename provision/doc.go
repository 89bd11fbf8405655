// Package provision owns zero-touch onboarding: the device identity and factory data, SPAKE2+
// pairing with the phone app (RFC 9383), enrollment with the fleet cloud (CSR, mTLS), the signed
// site profile and its verification, and devcloud, the reference fleet cloud used by tests and
// `make run`. Its subpackages each own one step:
//
//	identity   device key (P-256, on the data partition), factory data, QR label payload
//	pake       SPAKE2+ (RFC 9383) on P-256, Matter-style PBKDF2 setup-code stretching
//	onboard    the pairing protocol (device and app sides), transport-independent; HTTP transport
//	enroll     enrollment (claim + CSR → certificate) and the mTLS cloud client
//	profile    the site profile: schema, validation, DSSE/ed25519 signing, last-good store
//	awsimport  an AWS VPN connection (vpn/awsconfig) → the profile's VPN section + secrets
//	agent      the device-side service: Run(ctx, up), Profile, Subscribe, Secret
//	devcloud   the reference fleet cloud (meshcloud), with openapi.yaml
//	api        the cloud API's wire types and the operator client
//
// Nothing here imports firmware, and vpn never imports provision: the firmware starts the agent
// and turns each verified profile's VPN section (self-contained, mirroring AWS TunnelOptions) into
// a vpn.Config, resolving its psk_ref values with Agent.Secret.
package provision
