package ike

import (
	"strings"
	"testing"
)

func TestParseProposalRoundTrip(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"aes128-sha1-modp2048", "aes128-sha1-modp2048"},
		{"aes256gcm16-prfsha256-ecp384", "aes256gcm16-prfsha256-ecp384"},
		{"aes256gcm128-prfsha256-modp2048", "aes256gcm16-prfsha256-modp2048"},
		{"AES128-SHA2_256-MODP2048", "aes128-sha256-modp2048"},
		{"aes128gcm16-prfsha512-curve25519", "aes128gcm16-prfsha512-curve25519"},
		{"aes128-aes256-sha1-sha256-modp2048-ecp256", "aes128-aes256-sha1-sha256-modp2048-ecp256"},
		{"aes256-sha384-ecp384-esn", "aes256-sha384-ecp384-esn"},
		{"modp2048-aes128-sha1", "aes128-sha1-modp2048"},
	} {
		p, err := ParseProposal(tc.in)
		if err != nil {
			t.Errorf("ParseProposal(%q) = %v", tc.in, err)
			continue
		}
		if got := p.String(); got != tc.want {
			t.Errorf("ParseProposal(%q).String() = %q; want %q", tc.in, got, tc.want)
		}
	}
	if _, err := ParseProposal("aes128-md5-modp2048"); err == nil || !strings.Contains(err.Error(), `"md5"`) {
		t.Errorf("ParseProposal(md5) = %v; want an error naming md5", err)
	}
}

func TestNormalize(t *testing.T) {
	for _, tc := range []struct {
		in    string
		proto ProtocolID
		want  string // "" = error expected
	}{
		{"aes128-sha1-modp2048", ProtoIKE, "aes128-sha1-prfsha1-modp2048"},
		{"aes256-sha384-ecp384", ProtoIKE, "aes256-sha384-prfsha384-ecp384"},
		{"aes256gcm16-prfsha256-modp2048", ProtoIKE, "aes256gcm16-prfsha256-modp2048"},
		{"aes256gcm16-modp2048", ProtoIKE, ""},             // AEAD IKE needs a PRF
		{"aes128-sha1", ProtoIKE, ""},                      // IKE needs DH
		{"aes128-aes128gcm16-sha1-modp2048", ProtoIKE, ""}, // mixed AEAD
		{"aes128gcm16-sha1-prfsha1-modp2048", ProtoIKE, ""},
		{"aes128-sha1-modp2048", ProtoESP, "aes128-sha1-modp2048"},
		{"aes256gcm16", ProtoESP, "aes256gcm16"},
		{"aes128-sha1-prfsha1", ProtoESP, ""},
		{"aes128", ProtoESP, ""},
	} {
		p, err := ParseProposal(tc.in)
		if err != nil {
			t.Fatal(err)
		}
		q, err := p.normalize(tc.proto)
		switch {
		case tc.want == "" && err == nil:
			t.Errorf("normalize(%q, %v) = %q; want an error", tc.in, tc.proto, q)
		case tc.want != "" && (err != nil || q.String() != tc.want):
			t.Errorf("normalize(%q, %v) = %q, %v; want %q", tc.in, tc.proto, q, err, tc.want)
		}
	}
}

func norm(t *testing.T, proto ProtocolID, s string) []Proposal {
	t.Helper()
	ps, err := ParseProposals(s)
	if err != nil {
		t.Fatal(err)
	}
	for i := range ps {
		if ps[i], err = ps[i].normalize(proto); err != nil {
			t.Fatal(err)
		}
	}
	return ps
}

func offer(t *testing.T, proto ProtocolID, s string) []SAProposal {
	t.Helper()
	var sps []SAProposal
	for i, p := range norm(t, proto, s) {
		sps = append(sps, p.toSA(uint8(i+1), proto, nil, true))
	}
	return sps
}

// TestSelectLowest checks the AWS rule: the lowest allowed value per transform type wins,
// whatever the initiator's order.
func TestSelectLowest(t *testing.T) {
	for _, tc := range []struct {
		name, ours, theirs string
		proto              ProtocolID
		stripDH            bool
		want               string // "" = no proposal chosen
	}{
		{"initiator order ignored", "aes128-aes256-sha1-sha256-modp1024-modp2048",
			"aes256-aes128-sha256-sha1-modp2048-modp1024", ProtoIKE, false, "aes128-sha1-prfsha1-modp1024"},
		{"intersection only", "aes128-aes256-sha1-sha256-modp1024-modp2048",
			"aes256-sha256-modp2048", ProtoIKE, false, "aes256-sha256-prfsha256-modp2048"},
		{"CBC below GCM", "aes128-sha1-modp2048,aes128gcm16-prfsha256-modp2048",
			"aes128gcm16-prfsha256-modp2048,aes128-sha1-modp2048", ProtoIKE, false, "aes128-sha1-prfsha1-modp2048"},
		{"group number order", "aes256gcm16-prfsha256-ecp256-modp2048-curve25519",
			"aes256gcm16-prfsha256-curve25519-ecp256-modp2048", ProtoIKE, false, "aes256gcm16-prfsha256-modp2048"},
		{"no match", "aes256gcm16-prfsha256-modp2048", "aes128-sha1-modp1024", ProtoIKE, false, ""},
		{"ESP PFS", "aes256gcm16-modp2048-ecp384", "aes256gcm16-ecp384-modp2048", ProtoESP, false, "aes256gcm16-modp2048"},
		{"ESP in IKE_AUTH ignores DH", "aes128-sha1-modp2048", "aes128-sha1-modp1024", ProtoESP, true, "aes128-sha1"},
		{"ESP PFS mismatch", "aes128-sha1-modp2048", "aes128-sha1", ProtoESP, false, ""},
		{"ESP no PFS vs PFS offer", "aes128-sha1", "aes128-sha1-modp2048", ProtoESP, false, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sel, ok := selectProposal(norm(t, tc.proto, tc.ours), offer(t, tc.proto, tc.theirs), tc.proto, tc.stripDH, nil)
			got := ""
			if ok {
				got = formatSAProposal(sel.prop)
			}
			if got != tc.want {
				t.Errorf("selectProposal(ours %q, theirs %q) = %q; want %q", tc.ours, tc.theirs, got, tc.want)
			}
		})
	}
}

func TestSelectPrefer(t *testing.T) {
	ours := norm(t, ProtoIKE, "aes128-aes256-sha1-sha256-modp1024-modp2048")
	theirs := offer(t, ProtoIKE, "aes128-aes256-sha1-sha256-modp1024-modp2048")
	prefer := []Algorithm{{TransformENCR, EncrAESCBC, 256}, {TransformPRF, PRFHMACSHA2256, 0}, {TransformINTEG, IntegHMACSHA2256128, 0}, {TransformDH, DHModp2048, 0}}
	sel, ok := selectProposal(ours, theirs, ProtoIKE, false, prefer)
	if !ok || formatSAProposal(sel.prop) != "aes256-sha256-prfsha256-modp2048" {
		t.Errorf("selectProposal(prefer current) = %q, %v; want aes256-sha256-prfsha256-modp2048", formatSAProposal(sel.prop), ok)
	}
}

func TestCheckChosen(t *testing.T) {
	ours := norm(t, ProtoIKE, "aes256gcm16-prfsha256-modp2048,aes128-sha1-modp2048")
	for _, tc := range []struct {
		chosen string
		ok     bool
	}{
		{"aes256gcm16-prfsha256-modp2048", true},
		{"aes128-sha1-prfsha1-modp2048", true},
		{"aes128-sha1-prfsha256-modp2048", false}, // mixes our two proposals' PRFs
		{"aes256gcm16-prfsha256-modp1024", false},
		{"aes128-prfsha1-modp2048", false}, // integrity missing
	} {
		p, _ := ParseProposal(tc.chosen)
		sa := &SAPayload{Proposals: []SAProposal{p.toSA(1, ProtoIKE, nil, true)}}
		_, err := checkChosen(ours, sa, ProtoIKE, false)
		if (err == nil) != tc.ok {
			t.Errorf("checkChosen(%q) = %v; want ok=%v", tc.chosen, err, tc.ok)
		}
	}
}
