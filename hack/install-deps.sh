#!/usr/bin/env bash
# Installs what microfaas's tests and its main job need on a Debian 12 machine, idempotently:
# QEMU from bookworm-backports (the default suite's qemu-system conflicts with the image's
# qemu-utils 10), the kernel source and tools for hack/build-kernel.sh, SNMP agents (net-snmp and
# an snmpsim venv), Chromium and its WebDriver, and the static-agent Rust target.
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

# make/gcc/binutils/xz-utils/patch: hack/build-kernel.sh and readelf in the image tests; python3:
# hack/test-artifacts.sh and the function reference vectors. chromium/chromium-driver: the web
# view's browser test (tests/ui_browser.rs) drives headless Chromium over WebDriver.
for p in linux-source-6.1 flex bison libelf-dev bc lz4 cpio kmod snmpd snmp python3-venv \
         make gcc binutils xz-utils patch python3 chromium chromium-driver; do
  have "$p" || need_apt+=("$p")
done
have qemu-system-x86 || need_qemu=1

if [ ${#need_apt[@]} -gt 0 ] || [ -n "${need_qemu:-}" ] || [ -n "${need_update:-}" ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  if [ ${#need_apt[@]} -gt 0 ]; then
    apt-get install -y -qq --no-install-recommends "${need_apt[@]}"
  fi
  if [ -n "${need_qemu:-}" ]; then
    apt-get install -y -qq --no-install-recommends -t bookworm-backports qemu-system-x86
  fi
fi

# snmpd's package starts a system daemon; tests run their own instances on loopback.
if command -v systemctl >/dev/null 2>&1; then systemctl stop snmpd 2>/dev/null || true; fi

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
