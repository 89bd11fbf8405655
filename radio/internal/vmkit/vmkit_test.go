package vmkit

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestLddPaths(t *testing.T) {
	out := []byte("\tlinux-vdso.so.1 (0x00007ffd2b5f4000)\n" +
		"\tlibnl-3.so.200 => /lib/x86_64-linux-gnu/libnl-3.so.200 (0x00007f0e0c5a0000)\n" +
		"\tlibssl.so.3 => /lib/x86_64-linux-gnu/libssl.so.3 (0x00007f0e0c4f0000)\n" +
		"\tlibmissing.so => not found\n" +
		"\t/lib64/ld-linux-x86-64.so.2 (0x00007f0e0c800000)\n")
	want := []string{"/lib/x86_64-linux-gnu/libnl-3.so.200", "/lib/x86_64-linux-gnu/libssl.so.3", "/lib64/ld-linux-x86-64.so.2"}
	if diff := cmp.Diff(want, lddPaths(out)); diff != "" {
		t.Errorf("lddPaths() (-want +got):\n%s", diff)
	}
}
