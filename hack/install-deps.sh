#!/usr/bin/env bash
# Installs what microfaas's tests and its main job need on a Debian 12 machine, idempotently:
# QEMU from bookworm-backports (the default suite's qemu-system conflicts with the image's
# qemu-utils 10), the kernel source and tools for hack/build-kernel.sh, SNMP agents (net-snmp and
# an snmpsim venv), the servers the service-backed functions are tested against (Redis,
# PostgreSQL, mosquitto, and moto's S3 server in a venv), Chromium and its WebDriver, the
# static-agent and wasm32-wasip1 Rust targets, and the ARMv7 toolchain, qemu-system-arm and
# card tools for the BeagleBone image; and qemu-bridge-helper's ACL for the tap test's bridge.
set -euo pipefail

need_apt=()
have() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }

# bookworm-backports on the mirror this machine already uses for bookworm: the URI is read from
# apt's own view of its configured sources (one-line or deb822 files alike), never written here.
backports_list=/etc/apt/sources.list.d/bookworm-backports.list
if ! grep -qs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/*; then
  mirror=$(apt-cache policy 2>/dev/null | awk '$3 == "bookworm/main" {print $2; exit}')
  if [ -z "$mirror" ]; then
    apt-get update -qq
    mirror=$(apt-cache policy 2>/dev/null | awk '$3 == "bookworm/main" {print $2; exit}')
  fi
  [ -n "$mirror" ] || { echo "install-deps: no configured apt source serves bookworm/main" >&2; exit 1; }
  echo "deb $mirror bookworm-backports main" >"$backports_list"
  need_update=1
fi

# The BeagleBone worker (ARMv7): rustup cannot fetch an armv7 std here, so Debian's rustc-web
# (/usr/bin/rustc) with the armhf std builds the agent (hack/build-agent-armv7.sh), linked by
# the cross gcc against a static glibc; the same gcc cross-builds the ARM kernel. u-boot-omap
# (armhf) is fetched by hack/flash-beaglebone.sh with apt-get download, so apt must know armhf.
if ! dpkg --print-foreign-architectures | grep -qx armhf; then
  dpkg --add-architecture armhf
  need_update=1
fi

# make/gcc/binutils/xz-utils/patch: hack/build-kernel.sh and readelf in the image tests; python3:
# hack/test-artifacts.sh and the function reference vectors; dosfstools/mtools/fdisk: the
# BeagleBone card (hack/flash-beaglebone.sh); u-boot-tools: `mkimage -l` checks boot.scr and
# wraps the falcon-mode uImage; device-tree-compiler: fdtput writes the falcon-mode `args`;
# u-boot-qemu: a real U-Boot boots the card image under qemu-system-arm in the image tests;
# chromium/chromium-driver: the web view's browser test (tests/ui_browser.rs); iproute2: the
# tap test's network namespace and bridge (tests/tap_qemu.rs); etcd-server/etcd-client: the
# store over etcd (tests/store_conformance.rs and the CLI tests start their own 3-member
# cluster on loopback); openssl: the certificates of the etcd TLS tests (tests/store_tls.rs).
for p in linux-source-6.1 flex bison libelf-dev bc lz4 cpio kmod snmpd snmp python3-venv \
         make gcc binutils xz-utils patch python3 \
         redis-server postgresql mosquitto mosquitto-clients \
         rustc-web libstd-rust-web-dev:armhf gcc-arm-linux-gnueabihf libc6-dev-armhf-cross \
         dosfstools mtools fdisk u-boot-tools device-tree-compiler u-boot-qemu \
         chromium chromium-driver iproute2 etcd-server etcd-client openssl; do
  have "$p" || need_apt+=("$p")
done
have qemu-system-x86 || need_qemu=1
have qemu-system-arm || need_qemu=1

if [ ${#need_apt[@]} -gt 0 ] || [ -n "${need_qemu:-}" ] || [ -n "${need_update:-}" ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  if [ ${#need_apt[@]} -gt 0 ]; then
    apt-get install -y -qq --no-install-recommends "${need_apt[@]}"
  fi
  if [ -n "${need_qemu:-}" ]; then
    apt-get install -y -qq --no-install-recommends -t bookworm-backports qemu-system-x86 qemu-system-arm
  fi
fi

# Tap networking: qemu-bridge-helper attaches a VM only to a bridge its ACL allows. The ACL
# includes a file microfaas owns, which allows tests/tap_qemu.rs's bridge (it exists only in
# that test's own network namespace); users list their bridges there too (README).
mkdir -p /etc/qemu
grep -qsx 'allow mfaastest0' /etc/qemu/microfaas-bridges.conf \
  || echo 'allow mfaastest0' >>/etc/qemu/microfaas-bridges.conf
grep -qsx 'include /etc/qemu/microfaas-bridges.conf' /etc/qemu/bridge.conf \
  || echo 'include /etc/qemu/microfaas-bridges.conf' >>/etc/qemu/bridge.conf

# These packages start system daemons; tests run their own instances on loopback.
if command -v systemctl >/dev/null 2>&1; then
  for unit in snmpd redis-server mosquitto postgresql; do systemctl stop "$unit" 2>/dev/null || true; done
  # etcd-server enables its unit: a host etcd on 2379 would be a shared store nobody asked for.
  systemctl disable --now etcd 2>/dev/null || true
fi
if [ -x /etc/init.d/etcd ]; then
  /etc/init.d/etcd stop >/dev/null 2>&1 || true
  update-rc.d etcd disable >/dev/null 2>&1 || true
fi

# An S3-compatible object store for the upload_file/download_file tests: moto's server, with
# boto3 to read objects back. tests/support/services.rs looks here (or at $MICROFAAS_MOTO_VENV).
MOTO_VENV=/opt/microfaas/moto-venv
if [ ! -x "$MOTO_VENV/bin/moto_server" ]; then
  mkdir -p "$(dirname "$MOTO_VENV")"
  /usr/bin/python3 -m venv "$MOTO_VENV"
  "$MOTO_VENV/bin/pip" install -q 'moto[server]==5.2.6' boto3==1.44.18
fi

# A simulated managed switch for the SNMP driver tests: snmpsim in a venv made from Debian's
# Python, because snmpsim run as root drops to nobody, who cannot read a Python under /root.
# tests/snmp.rs looks here (or at $MICROFAAS_SNMPSIM).
SNMPSIM_VENV=/opt/microfaas/snmpsim-venv
if [ ! -x "$SNMPSIM_VENV/bin/snmpsim-command-responder" ]; then
  mkdir -p "$(dirname "$SNMPSIM_VENV")"
  /usr/bin/python3 -m venv "$SNMPSIM_VENV"
  # snmpsim does not pull pysmi itself.
  "$SNMPSIM_VENV/bin/pip" install -q snmpsim==1.2.2 pysmi==2.0.0
fi

rustup target list --installed 2>/dev/null | grep -q x86_64-unknown-linux-musl \
  || rustup target add x86_64-unknown-linux-musl
# User functions: the example (examples/wasm-fn) is built from source for WASI preview 1 by
# the tests that run it.
rustup target list --installed 2>/dev/null | grep -q wasm32-wasip1 \
  || rustup target add wasm32-wasip1
