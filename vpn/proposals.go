package vpn

import (
	"errors"
	"slices"
	"strings"

	"meshroot/vpn/ike"
)

// The offer we build from AWS's allowed algorithm lists. The concentrator chooses "starting
// with the lowest configured value, regardless of the proposal order from the customer
// gateway": with AWS's defaults (everything allowed) an offer of everything gets AES-128-CBC,
// HMAC-SHA1 and DH group 2. So from what the concentrator allows we offer:
//
//   - encryption: the AES-GCM-16 algorithms when any is allowed (AEAD: one pass, the fastest
//     ESP), otherwise AES-CBC;
//   - integrity and PRF: SHA-2 when any is allowed, otherwise SHA-1;
//   - Diffie-Hellman: groups 14-21 when any is allowed, otherwise what there is (2, 5 and the
//     MODP groups with small subgroups, 22-24, are weak).
//
// Encryption and integrity are listed strongest first, DH groups lowest first (the key share
// goes with the first group, and the concentrator's lowest-value rule picks that one); the
// concentrator then decides among them (AES-128-GCM, SHA2-256, group 14 for AWS's defaults). Anything else can
// be forced with TunnelOptions.IKEProposals / ESPProposals.

var (
	encKeyword = map[string]string{"AES128": "aes128", "AES256": "aes256", "AES128-GCM-16": "aes128gcm16", "AES256-GCM-16": "aes256gcm16"}
	encOrder   = []string{"AES256-GCM-16", "AES128-GCM-16", "AES256", "AES128"}
	intKeyword = map[string]string{"SHA1": "sha1", "SHA2-256": "sha256", "SHA2-384": "sha384", "SHA2-512": "sha512"}
	intOrder   = []string{"SHA2-256", "SHA2-384", "SHA2-512", "SHA1"}
	dhKeyword  = map[int]string{
		2: "modp1024", 5: "modp1536", 14: "modp2048", 15: "modp3072", 16: "modp4096", 17: "modp6144",
		18: "modp8192", 19: "ecp256", 20: "ecp384", 21: "ecp521", 22: "modp1024s160", 23: "modp2048s224",
		24: "modp2048s256",
	}
	// Lowest first: our first group is the one we send a key share for, and the
	// concentrator's lowest-value rule would pick it anyway (no INVALID_KE_PAYLOAD round).
	dhOrder  = []int{2, 5, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24}
	strongDH = []int{14, 15, 16, 17, 18, 19, 20, 21}
)

// pick returns the allowed values in order, the preferred tier only when it is not empty.
func pick[T comparable](allowed, order []T, preferred func(T) bool) []T {
	var strong, all []T
	for _, v := range order {
		if slices.Contains(allowed, v) {
			all = append(all, v)
			if preferred(v) {
				strong = append(strong, v)
			}
		}
	}
	if len(strong) > 0 {
		return strong
	}
	return all
}

func isGCM(s string) bool   { return strings.HasSuffix(s, "-GCM-16") }
func isSHA2(s string) bool  { return s != "SHA1" }
func isStrongDH(g int) bool { return slices.Contains(strongDH, g) }
func keywords[T comparable](vs []T, m map[T]string, prefix string) []string {
	var out []string
	for _, v := range vs {
		out = append(out, prefix+m[v])
	}
	return out
}

// offerIKE builds our IKE proposal from the phase 1 lists.
func offerIKE(o TunnelOptions) ([]ike.Proposal, error) {
	encs := pick(o.Phase1EncryptionAlgorithms, encOrder, isGCM)
	ints := pick(o.Phase1IntegrityAlgorithms, intOrder, isSHA2)
	dhs := pick(o.Phase1DHGroupNumbers, dhOrder, isStrongDH)
	if len(encs) == 0 || len(ints) == 0 || len(dhs) == 0 {
		return nil, errors.New("phase 1: no usable encryption, integrity or DH group allowed")
	}
	parts := keywords(encs, encKeyword, "")
	if isGCM(encs[0]) {
		parts = append(parts, keywords(ints, intKeyword, "prf")...) // AEAD: integrity is the PRF only
	} else {
		parts = append(parts, keywords(ints, intKeyword, "")...)
	}
	parts = append(parts, keywords(dhs, dhKeyword, "")...)
	p, err := ike.ParseProposal(strings.Join(parts, "-"))
	if err != nil {
		return nil, err
	}
	return []ike.Proposal{p}, nil
}

// offerESP builds our ESP proposal from the phase 2 lists (the DH groups are for PFS).
func offerESP(o TunnelOptions) ([]ike.Proposal, error) {
	encs := pick(o.Phase2EncryptionAlgorithms, encOrder, isGCM)
	ints := pick(o.Phase2IntegrityAlgorithms, intOrder, isSHA2)
	dhs := pick(o.Phase2DHGroupNumbers, dhOrder, isStrongDH)
	if len(encs) == 0 || len(dhs) == 0 || !isGCM(encs[0]) && len(ints) == 0 {
		return nil, errors.New("phase 2: no usable encryption, integrity or DH group allowed")
	}
	parts := keywords(encs, encKeyword, "")
	if !isGCM(encs[0]) {
		parts = append(parts, keywords(ints, intKeyword, "")...)
	}
	parts = append(parts, keywords(dhs, dhKeyword, "")...)
	p, err := ike.ParseProposal(strings.Join(parts, "-"))
	if err != nil {
		return nil, err
	}
	return []ike.Proposal{p}, nil
}
