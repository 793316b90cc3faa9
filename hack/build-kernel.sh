#!/usr/bin/env bash
# Builds a small all-built-in kernel from Debian's linux-source-6.1 and prints its path:
#   hack/build-kernel.sh [x86_64]  the QEMU x86 worker kernel: tinyconfig + the fragment
#                                  hack/kernel/microvm-x86_64.config + hack/kernel/patches/*.patch
#                                  (applied in name order) -> bzImage
#   hack/build-kernel.sh armv7     one ARMv7 multi-platform kernel for QEMU `-M virt` AND the
#                                  BeagleBone Black: tinyconfig + hack/kernel/armv7.config,
#                                  cross-built with arm-linux-gnueabihf-gcc -> zImage, with
#                                  am335x-boneblack.dtb next to it
#
# The result is cached under ${MICROFAAS_CACHE:-$HOME/.cache/microfaas}/kernel/<key>/, where
# <key> is the sha256 of the fragment, the patches and the kernel source package version (and,
# for armv7, the architecture and cross compiler version), because a build takes minutes on 2
# cores (x86 ~6.5 min). A second run with the same inputs only prints the path.
# The build happens in a temp dir next to the cache entry and is moved into place at the end,
# so an interrupted run leaves no half-written entry behind.
#
# Progress goes to stderr; stdout carries only the kernel image path, so callers can capture it:
#   BZIMAGE=$(hack/build-kernel.sh)       ZIMAGE=$(hack/build-kernel.sh armv7)
# Needs: linux-source-6.1 flex bison libelf-dev bc lz4 patch, and gcc-arm-linux-gnueabihf for
# armv7 (hack/install-deps.sh installs them).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
target=${1:-x86_64}
case "$target" in
  x86_64)
    karch=x86_64 cross='' default_fragment=$here/kernel/microvm-x86_64.config
    patch_glob=$here/kernel/patches
    make_targets=(bzImage) image=arch/x86/boot/bzImage extras=() ;;
  armv7)
    karch=arm cross=arm-linux-gnueabihf- default_fragment=$here/kernel/armv7.config
    # The x86 patches touch arch/x86 only.
    patch_glob=$here/kernel/patches-armv7
    make_targets=(zImage am335x-boneblack.dtb) image=arch/arm/boot/zImage
    extras=(arch/arm/boot/dts/am335x-boneblack.dtb) ;;
  *) echo "build-kernel: error: unknown target '$target' (expected x86_64 or armv7)" >&2; exit 2 ;;
esac
fragment=${MICROFAAS_KERNEL_FRAGMENT:-$default_fragment}
patches=("$patch_glob"/*.patch)
[ -e "${patches[0]}" ] || patches=()
src_tar=/usr/src/linux-source-6.1.tar.xz
cache=${MICROFAAS_CACHE:-$HOME/.cache/microfaas}/kernel

log() { echo "build-kernel: $*" >&2; }
die() { log "error: $*"; exit 1; }

[ -f "$fragment" ] || die "config fragment $fragment not found"
[ -f "$src_tar" ] || die "$src_tar not found: run hack/install-deps.sh (installs linux-source-6.1)"
for tool in make gcc flex bison bc lz4 xz patch ${cross:+"${cross}gcc"}; do
  command -v "$tool" >/dev/null || die "'$tool' not found: run hack/install-deps.sh"
done

# The source package version names the exact kernel tree; fall back to hashing the tarball
# when dpkg does not know the file (e.g. a hand-placed tarball).
src_version=$(dpkg-query -W -f='${Version}' linux-source-6.1 2>/dev/null || true)
[ -n "$src_version" ] || src_version=$(sha256sum "$src_tar" | cut -d' ' -f1)
# The x86 key is what it was before armv7 existed, so existing caches stay valid.
key=$( { cat "$fragment" ${patches[@]+"${patches[@]}"}; echo "linux-source-6.1 $src_version"
         [ -z "$cross" ] || echo "$target $("${cross}gcc" -dumpfullversion)"; } |
  sha256sum | cut -d' ' -f1)
out_dir=$cache/$key
name=$(basename "$image")

if [ -s "$out_dir/$name" ]; then
  log "cached: $out_dir/$name"
  echo "$out_dir/$name"
  exit 0
fi

mkdir -p "$cache"
work=$(mktemp -d "$cache/.build-XXXXXX")
cleanup() { rm -rf "$work"; }
trap cleanup EXIT
trap 'exit 130' INT TERM

log "unpacking $src_tar (linux-source-6.1 $src_version)"
tar -xJf "$src_tar" -C "$work"
tree=$work/linux-source-6.1
[ -d "$tree" ] || die "unexpected tarball layout: no linux-source-6.1/ in $src_tar"

kmake() { make -C "$tree" ARCH="$karch" ${cross:+CROSS_COMPILE="$cross"} "$@"; }

for p in ${patches[@]+"${patches[@]}"}; do
  log "patch $(basename "$p")"
  patch -d "$tree" -p1 --forward --quiet <"$p" || die "$(basename "$p") does not apply to linux-source-6.1 $src_version"
done

log "tinyconfig + $(basename "$fragment") + olddefconfig"
kmake tinyconfig >/dev/null
(cd "$tree" && ARCH=$karch scripts/kconfig/merge_config.sh -m .config "$fragment") >/dev/null
kmake olddefconfig >/dev/null

# olddefconfig silently drops symbols whose dependencies are unmet; a kernel missing one of
# them would boot and then fail in a confusing way (no console, no NIC), so stop here instead.
# Every assignment in the fragment (=y, =m, numbers, strings) and every "is not set" must hold.
missing=()
while IFS= read -r line; do
  case "$line" in
    CONFIG_*=*) grep -qxF "$line" "$tree/.config" || missing+=("$line") ;;
    "# CONFIG_"*" is not set")
      sym=${line#"# "}; sym=${sym%" is not set"}
      if grep -qE "^${sym}=" "$tree/.config"; then missing+=("$line"); fi ;;
  esac
done <"$fragment"
if [ ${#missing[@]} -gt 0 ]; then
  die "these settings from $(basename "$fragment") did not survive olddefconfig (unmet dependencies?): ${missing[*]}"
fi

jobs=$(nproc)
log "make -j$jobs ${make_targets[*]} (minutes on 2 cores)"
started=$SECONDS
if ! kmake -j"$jobs" "${make_targets[@]}" >"$work/build.log" 2>&1; then
  tail -n 40 "$work/build.log" >&2
  die "kernel build failed (last 40 lines above)"
fi
log "built in $((SECONDS - started)) s"

staged=$work/out
mkdir -p "$staged"
cp "$tree/$image" "$staged/$name"
for f in ${extras[@]+"${extras[@]}"}; do cp "$tree/$f" "$staged/"; done
cp "$tree/.config" "$staged/config"
cp "$fragment" "$staged/fragment.config"
[ ${#patches[@]} -eq 0 ] || cat "${patches[@]}" >"$staged/patches.diff"
echo "linux-source-6.1 $src_version" >"$staged/source-version"
# Another run may have finished the same key meanwhile; its result is just as good.
if ! mv -T "$staged" "$out_dir" 2>/dev/null; then
  [ -s "$out_dir/$name" ] || die "could not move the build into $out_dir"
fi
log "done: $out_dir/$name ($(stat -c %s "$out_dir/$name") bytes)"
echo "$out_dir/$name"
