#!/usr/bin/env bash
# Installs the Debian packages the build, `make run` and the tests use, when any is missing.
# Idempotent and quick when everything is there. Needs root (CI runs as root).
set -euo pipefail

PKGS=(
  # VPN lab: the concentrator peer (strongSwan charon with kernel-libipsec, FRR bgpd), tools
  strongswan-charon strongswan-swanctl libcharon-extra-plugins libstrongswan-extra-plugins
  libstrongswan-standard-plugins frr iperf3 tcpdump iputils-ping iproute2
  # virtual routers: QEMU (TCG), kernel module tools, cpio, compressors
  qemu-system-arm qemu-system-x86 ipxe-qemu kmod cpio xz-utils zstd
  # radios: hostapd/wpa_supplicant/iw on mac80211_hwsim, regulatory database
  hostapd wpasupplicant iw wireless-regdb
  # OTA: U-Boot env tools (fw_printenv/fw_setenv) and U-Boot for QEMU's arm64 virt board
  libubootenv-tool u-boot-qemu
  # image/qemu: mkfs.ext4 formats the virtual router's data partition; partx checks the GPT
  e2fsprogs util-linux
)

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "install-deps: missing packages (${missing[*]}); run as root or install them" >&2
  exit 1
fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get -o DPkg::Lock::Timeout=300 update -q
apt-get -o DPkg::Lock::Timeout=300 install -y -q --no-install-recommends "${missing[@]}"
