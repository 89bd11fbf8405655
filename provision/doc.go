// Package provision owns zero-touch onboarding: the device identity and factory data, SPAKE2+
// pairing with the phone app (RFC 9383), enrollment with the fleet cloud (CSR, mTLS), the signed
// site profile and its verification, and devcloud, the reference fleet cloud used by tests and
// `make run`. Its subpackages each own one step.
package provision
