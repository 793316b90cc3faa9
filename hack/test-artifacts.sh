#!/usr/bin/env bash
# Prepares what the QEMU and image tests need and prints `export` lines for them:
#   MICROFAAS_TEST_KERNEL  the small all-built-in bzImage (hack/build-kernel.sh, cached)
#   MICROFAAS_TEST_AGENT   the static musl microfaas-agent (release build)
#   MICROFAAS_TEST_GPIO_GUEST  the static musl PID 1 of tests/gpio_sim.rs (hack/gpio-sim-guest.rs)
#   MICROFAAS_TEST_KERNEL_ARMV7  the ARMv7 zImage for QEMU virt and the BeagleBone, with
#                          am335x-boneblack.dtb next to it (hack/build-kernel.sh armv7, cached)
#   MICROFAAS_TEST_AGENT_ARMV7   the static ARMv7 agent (hack/build-agent-armv7.sh)
# Use it as:  eval "$(hack/test-artifacts.sh)" && cargo test
# The Debian cloud kernel is fetched by the tests themselves into the same cache
# (${MICROFAAS_CACHE:-$HOME/.cache/microfaas}) with apt-get download.
# Progress goes to stderr; stdout carries only the export lines.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(dirname "$here")

kernel=$("$here/build-kernel.sh")
kernel_armv7=$("$here/build-kernel.sh" armv7)

# Builds one static musl target in release; prints its executable (the JSON artifact messages
# name it wherever CARGO_TARGET_DIR puts it).
# usage: build_static FEATURES --bin|--example NAME
build_static() {
  local features=$1 kind=$2 name=$3 exe
  echo "test-artifacts: building $name (x86_64-unknown-linux-musl, features $features)" >&2
  exe=$(cd "$repo" && cargo build --release --no-default-features --features "$features" \
      --target x86_64-unknown-linux-musl "$kind" "$name" \
      --message-format=json-render-diagnostics \
    | NAME="$name" python3 -c '
import json, os, sys
for line in sys.stdin:
    msg = json.loads(line)
    if msg.get("reason") == "compiler-artifact" and msg.get("executable") \
            and msg["target"]["name"] == os.environ["NAME"]:
        print(msg["executable"])
')
  [ -n "$exe" ] && [ -x "$exe" ] || { echo "test-artifacts: $name build produced no executable" >&2; exit 1; }
  echo "test-artifacts: $name $exe ($(stat -c %s "$exe") bytes)" >&2
  printf '%s\n' "$exe"
}

agent=$(build_static agent --bin microfaas-agent)
gpio_guest=$(build_static gpio --example gpio-sim-guest)
agent_armv7=$("$here/build-agent-armv7.sh")

printf 'export MICROFAAS_TEST_KERNEL=%q\n' "$kernel"
printf 'export MICROFAAS_TEST_AGENT=%q\n' "$agent"
printf 'export MICROFAAS_TEST_GPIO_GUEST=%q\n' "$gpio_guest"
printf 'export MICROFAAS_TEST_KERNEL_ARMV7=%q\n' "$kernel_armv7"
printf 'export MICROFAAS_TEST_AGENT_ARMV7=%q\n' "$agent_armv7"
