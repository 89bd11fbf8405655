package awsimport

import (
	"encoding/json"
	"net/netip"
	"testing"
)

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func mustPrefix(s string) netip.Prefix { return netip.MustParsePrefix(s) }
