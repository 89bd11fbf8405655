package devcloud

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"meshroot/provision/api"
	"meshroot/provision/profile"
)

// TestStaticVPN: a static connection's remote networks go through PUT /v1/sites/{site}/vpn into
// the signed profile, which matches the document's Profile schema; a static VPN without them is
// refused with the field named.
func TestStaticVPN(t *testing.T) {
	c := startCloud(t, Config{})
	op, tok := c.opHTTP(), bearer(c.AdminToken())
	if st, b, _ := c.call(op, "POST", "/v1/sites", "/v1/sites", tok, mustJSON(t, api.CreateSiteRequest{ID: "hamburg-1", Country: "DE", WiFiSSID: "Meshroot"})); st != 201 {
		t.Fatalf("POST /v1/sites = %d %s", st, b)
	}
	v := exampleVPN()
	v.StaticRoutesOnly, v.BGP = true, nil
	st, b, _ := c.call(op, "PUT", "/v1/sites/{site}/vpn", "/v1/sites/hamburg-1/vpn", tok, mustJSON(t, v))
	if st != 422 || !strings.Contains(string(b), "vpn.remote_prefixes: missing") {
		t.Errorf("PUT static vpn without remote_prefixes = %d %s; want 422 naming vpn.remote_prefixes", st, b)
	}
	v.RemotePrefixes = []string{"10.50.0.0/16", "2600:1f18:4d3:b500::/56"}
	var raw any
	json.Unmarshal(mustJSON(t, v), &raw)
	if errs := c.sp.validate(map[string]any{"$ref": "#/components/schemas/VPN"}, raw, "vpn"); len(errs) > 0 {
		t.Errorf("static VPN does not match openapi.yaml's VPN schema: %s", strings.Join(errs, "; "))
	}
	if st, b, _ := c.call(op, "PUT", "/v1/sites/{site}/vpn", "/v1/sites/hamburg-1/vpn", tok, mustJSON(t, v)); st != 200 {
		t.Fatalf("PUT static vpn = %d %s", st, b)
	}
	st, env, _ := c.call(op, "GET", "/v1/sites/{site}/profile", "/v1/sites/hamburg-1/profile", tok, nil)
	if st != 200 {
		t.Fatalf("GET profile = %d %s", st, env)
	}
	got, err := profile.Verify(env, profile.NewKeySet(c.ProfileKey()), profile.Expect{SiteID: "hamburg-1"})
	if err != nil {
		t.Fatalf("Verify(issued static profile) = %v", err)
	}
	if diff := cmp.Diff(v.RemotePrefixes, got.VPN.RemotePrefixes); diff != "" {
		t.Errorf("issued profile's remote_prefixes mismatch (-want +got):\n%s", diff)
	}
	payload, _ := got.Marshal()
	json.Unmarshal(payload, &raw)
	if errs := c.sp.validate(map[string]any{"$ref": "#/components/schemas/Profile"}, raw, "profile"); len(errs) > 0 {
		t.Errorf("issued static profile does not match openapi.yaml's Profile schema: %s", strings.Join(errs, "; "))
	}
}
