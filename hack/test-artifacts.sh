#!/usr/bin/env bash
# Prepares what the QEMU and image tests need and prints `export` lines for them:
#   MICROFAAS_TEST_KERNEL  the small all-built-in bzImage (hack/build-kernel.sh, cached)
#   MICROFAAS_TEST_AGENT   the static musl microfaas-agent (release build)
# Use it as:  eval "$(hack/test-artifacts.sh)" && cargo test
# The Debian cloud kernel is fetched by the tests themselves into the same cache
# (${MICROFAAS_CACHE:-$HOME/.cache/microfaas}) with apt-get download.
# Progress goes to stderr; stdout carries only the export lines.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(dirname "$here")

kernel=$("$here/build-kernel.sh")

echo "test-artifacts: building the static agent (x86_64-unknown-linux-musl)" >&2
# The JSON artifact messages name the executable wherever CARGO_TARGET_DIR puts it.
agent=$(cd "$repo" && cargo build --release --no-default-features --features agent \
    --target x86_64-unknown-linux-musl --bin microfaas-agent \
    --message-format=json-render-diagnostics \
  | python3 -c '
import json, sys
for line in sys.stdin:
    msg = json.loads(line)
    if msg.get("reason") == "compiler-artifact" and msg.get("executable") \
            and msg["target"]["name"] == "microfaas-agent":
        print(msg["executable"])
')
[ -n "$agent" ] && [ -x "$agent" ] || { echo "test-artifacts: agent build produced no executable" >&2; exit 1; }
echo "test-artifacts: agent $agent ($(stat -c %s "$agent") bytes)" >&2

printf 'export MICROFAAS_TEST_KERNEL=%q\n' "$kernel"
printf 'export MICROFAAS_TEST_AGENT=%q\n' "$agent"
