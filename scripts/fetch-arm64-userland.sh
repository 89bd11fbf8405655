#!/usr/bin/env bash
# Downloads Debian's arm64 hostapd, wpa_supplicant and iw with the library packages they depend
# on, and unpacks them into a sysroot for arm64 images (image.Program resolves each binary's
# shared libraries there; the build machine's ldd cannot read arm64 ELF files):
#   $1/usr/sbin/hostapd  $1/sbin/wpa_supplicant  $1/sbin/iw  $1/lib/aarch64-linux-gnu/...
#   $1/packages.txt (package=version, what was unpacked)
# Idempotent: does nothing when the sysroot is complete. Only `apt-get download` and
# `dpkg-deb -x`: nothing is installed. arm64 is added to dpkg's architectures (as
# fetch-kernels.sh does) when missing.
set -euo pipefail
dest=${1:?usage: fetch-arm64-userland.sh SYSROOT_DIR}
top=(hostapd wpasupplicant iw)

complete() {
  [ -s "$dest/packages.txt" ] && [ -x "$dest/usr/sbin/hostapd" ] && [ -x "$dest/sbin/wpa_supplicant" ] && [ -x "$dest/sbin/iw" ]
}
complete && exit 0

if ! dpkg --print-foreign-architectures | grep -qx arm64; then
  dpkg --add-architecture arm64
  apt-get -o DPkg::Lock::Timeout=300 update -q
fi
if ! apt-cache show hostapd:arm64 >/dev/null 2>&1; then
  apt-get -o DPkg::Lock::Timeout=300 update -q
fi

# The packages: the three programs and, recursively, the library packages (lib*) they depend
# on. Non-library dependencies (adduser, debconf, readline-common...) carry no shared objects
# the programs load, and are not followed.
declare -A seen=()
queue=("${top[@]}")
pkgs=()
while [ ${#queue[@]} -gt 0 ]; do
  p=${queue[0]}; queue=("${queue[@]:1}")
  [ -n "${seen[$p]:-}" ] && continue
  seen[$p]=1
  pkgs+=("$p")
  while read -r dep; do
    case $dep in
      lib*) [ -z "${seen[$dep]:-}" ] && queue+=("$dep") ;;
    esac
  done < <(apt-cache depends --no-recommends --no-suggests --no-conflicts --no-breaks --no-replaces \
             --no-enhances "$p:arm64" 2>/dev/null |
           sed -n 's/^ *|\{0,1\}\(Pre\)\{0,1\}Depends: \([^<>[:space:]]*\)$/\2/p' | sed 's/:arm64$//')
done

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
chmod 755 "$tmp" # apt-get download runs as _apt where it can
(cd "$tmp" && apt-get download -q "${pkgs[@]/%/:arm64}")
rm -rf "$dest.new"; mkdir -p "$dest.new"
for deb in "$tmp"/*.deb; do
  dpkg-deb -x "$deb" "$dest.new"
  dpkg-deb -f "$deb" Package Version | paste -sd= | tr -d ' ' | sed 's/Package://; s/Version:/=/; s/==/=/'
done | sort > "$dest.new/packages.txt"
rm -rf "$dest"; mv "$dest.new" "$dest"
complete || { echo "fetch-arm64-userland: $dest is incomplete after unpacking" >&2; exit 1; }
echo "fetch-arm64-userland: $(wc -l < "$dest/packages.txt") packages in $dest"
