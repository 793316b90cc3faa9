#!/usr/bin/env bash
# Builds the static ARMv7 (Cortex-A8, hard float) microfaas-agent for BeagleBone images and the
# qemu-system-arm tests, and prints its path.
#
# rustup cannot fetch an armv7 standard library from these machines, so this uses Debian's
# packages instead (hack/install-deps.sh installs them): rustc-web's /usr/bin/rustc (1.96),
# libstd-rust-web-dev:armhf (the armv7-unknown-linux-gnueabihf std), gcc-arm-linux-gnueabihf as
# linker and libc6-dev-armhf-cross for a static glibc. Cargo is whatever cargo is on PATH;
# only RUSTC is pointed at Debian's compiler, for this build only, with its own target dir
# (the crates must be compiled by the same rustc as the std they link against).
#
#   AGENT=$(hack/build-agent-armv7.sh)
# Overrides: MICROFAAS_ARMV7_RUSTC (default /usr/bin/rustc), MICROFAAS_ARMV7_CC
# (arm-linux-gnueabihf-gcc), CARGO_TARGET_DIR (default target/armv7, the next to the usual one).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(dirname "$here")
target=armv7-unknown-linux-gnueabihf
rustc=${MICROFAAS_ARMV7_RUSTC:-/usr/bin/rustc}
cc=${MICROFAAS_ARMV7_CC:-arm-linux-gnueabihf-gcc}

die() { echo "build-agent-armv7: error: $*" >&2; exit 1; }
fix="run hack/install-deps.sh (rustc-web, libstd-rust-web-dev:armhf, gcc-arm-linux-gnueabihf, libc6-dev-armhf-cross)"

[ -x "$rustc" ] || die "missing cross toolchain: no Rust compiler at $rustc; $fix"
sysroot=$("$rustc" --print sysroot 2>/dev/null) || die "missing cross toolchain: $rustc does not run; $fix"
[ -d "$sysroot/lib/rustlib/$target/lib" ] \
  || die "missing cross toolchain: $rustc has no $target standard library; $fix"
command -v "$cc" >/dev/null || die "missing cross toolchain: no $cc; $fix"

export RUSTC=$rustc
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$repo/target}/armv7
export CARGO_TARGET_ARMV7_UNKNOWN_LINUX_GNUEABIHF_LINKER=$cc
# Static glibc: the agent is PID 1 of an initramfs with no libraries. Without NSS modules it
# resolves numeric addresses only, which is all the kernel command line carries.
export CARGO_TARGET_ARMV7_UNKNOWN_LINUX_GNUEABIHF_RUSTFLAGS="-C target-feature=+crt-static"
# Optimised for size, not speed ("s" is the release profile's): with the wasm interpreter and
# the service clients, static glibc puts the ARM agent at 2,125,296 bytes with "s" and
# 2,018,792 with "z", inside the 2 MiB budget only with "z".
export CARGO_PROFILE_RELEASE_OPT_LEVEL=z
# A different rustc than the x86 builds: keep rustup's wrapper from overriding it.
unset RUSTC_WRAPPER

echo "build-agent-armv7: cargo build --release ($target, $("$rustc" -V))" >&2
exe=$(cd "$repo" && cargo build --locked --release --no-default-features --features agent \
    --target "$target" --bin microfaas-agent --message-format=json-render-diagnostics \
  | python3 -c '
import json, sys
for line in sys.stdin:
    msg = json.loads(line)
    if msg.get("reason") == "compiler-artifact" and msg.get("executable") \
            and msg["target"]["name"] == "microfaas-agent":
        print(msg["executable"])
')
[ -n "$exe" ] && [ -x "$exe" ] || die "the build produced no microfaas-agent"
echo "build-agent-armv7: $exe ($(stat -c %s "$exe") bytes)" >&2
printf '%s\n' "$exe"
