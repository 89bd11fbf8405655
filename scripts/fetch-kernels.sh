#!/usr/bin/env bash
# Downloads Debian's unsigned arm64 and amd64 kernels (with their modules) into an ignored cache:
#   $1/arm64/vmlinuz  $1/arm64/modules/<kver>/...   (same for amd64)
# The ABI is the one the linux-image-{amd64,arm64} meta packages point at (6.1.0-56 when measured).
set -euo pipefail
dest=${1:?usage: fetch-kernels.sh CACHE_DIR}
have=1
for a in arm64 amd64; do [ -e "$dest/$a/vmlinuz" ] || have=0; done
[ $have = 1 ] && exit 0

if ! dpkg --print-foreign-architectures | grep -qx arm64; then
  dpkg --add-architecture arm64
  apt-get -o DPkg::Lock::Timeout=300 update -q
fi
abi=$(apt-cache depends linux-image-amd64 | sed -n 's/.*Depends: linux-image-\(.*\)-amd64$/\1/p' | head -n1)
if [ -z "$abi" ]; then
  apt-get -o DPkg::Lock::Timeout=300 update -q
  abi=$(apt-cache depends linux-image-amd64 | sed -n 's/.*Depends: linux-image-\(.*\)-amd64$/\1/p' | head -n1)
fi
[ -n "$abi" ] || { echo "fetch-kernels: cannot find the kernel ABI of linux-image-amd64" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && apt-get download -q "linux-image-$abi-arm64-unsigned:arm64" "linux-image-$abi-amd64-unsigned")
for a in arm64 amd64; do
  rm -rf "$dest/$a.new"; mkdir -p "$dest/$a.new"
  dpkg-deb -x "$tmp"/linux-image-"$abi"-"$a"-unsigned_*_"$a".deb "$dest/$a.new/root"
  kver=$(ls "$dest/$a.new/root/lib/modules")
  ln -s "root/boot/vmlinuz-$kver" "$dest/$a.new/vmlinuz"
  ln -s "root/lib/modules" "$dest/$a.new/modules"
  echo "$kver" > "$dest/$a.new/version"
  rm -rf "$dest/$a"; mv "$dest/$a.new" "$dest/$a"
  echo "fetch-kernels: $a $kver"
done
