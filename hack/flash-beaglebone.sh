#!/usr/bin/env bash
# Writes a BeagleBone Black worker microSD card, or a card image file for `dd`, from the output
# of `microfaasctl image build --target beaglebone --out DIR`, with THIS board's identity:
#
#   hack/flash-beaglebone.sh --image DIR --device /dev/sdX --worker bbb-3 \
#       --orchestrator 192.168.1.1:9000 --ip 192.168.1.13::192.168.1.1:255.255.255.0:bbb-3:eth0:off
#   hack/flash-beaglebone.sh --image DIR --out bbb-3.img --worker bbb-3 ...   # then dd it
#
# The card: an MBR with one bootable FAT32 partition (from 1 MiB) holding MLO and u-boot.img
# (Debian's u-boot-omap, am335x_boneblack, fetched with apt-get download unless --uboot DIR
# gives them), zImage, am335x-boneblack.dtb, initramfs.cpio.gz, boot.scr and uEnv.txt with the
# microfaas_* identity lines rewritten. Nothing per board is rebuilt: only uEnv.txt (and with
# --falcon, `args`) differs.
#
# --falcon: the card also boots in U-Boot's falcon mode: the SPL (MLO) loads `uImage` (the zImage
# in a legacy header, at 0x80008000) and `args` (the device tree with this board's kernel command
# line in /chosen, followed 1 MiB in by the initramfs, which /chosen's linux,initrd-start/-end
# point at once SPL has read `args` to 0x80F80000) and jumps to the kernel: no full U-Boot, no
# boot script. Debian's MLO has falcon mode built in but keeps its environment nowhere, so its
# `boot_os` can never be set; the card's MLO is Debian's with `bootdelay=2` in its built-in
# environment replaced by `boot_os=yes` (same length; bootdelay means nothing to SPL). Type 'c'
# on the serial console during SPL, or lose uImage/args, and SPL boots full U-Boot and the
# boot.scr path instead. --falcon-addrs KERNEL,ARGS and --dtb serve other boards.
#
# eMMC: boot the board from this card (hold S2 while powering on), then copy the card to the
# eMMC from a shell on it, or write the same image to /dev/mmcblk1 from any Linux booted on the
# board (`dd if=bbb-3.img of=/dev/mmcblk1 bs=4M conv=fsync`). The worker image itself has no
# shell, so that step needs a maintenance system (e.g. a Debian card).
#
# Refuses, before writing anything: a device that is not a block device, a device with a
# mounted filesystem (on it or any of its partitions), and the disk holding / (or /boot, /usr,
# swap). Writing to a device asks for confirmation unless --yes.
# Needs: sfdisk (fdisk), mkfs.vfat (dosfstools), mcopy (mtools), lsblk/findmnt (util-linux),
# and for --falcon mkimage (u-boot-tools), fdtput (device-tree-compiler) and perl;
# hack/install-deps.sh installs them.
set -euo pipefail

die() { echo "flash-beaglebone: error: $*" >&2; exit 1; }
log() { echo "flash-beaglebone: $*" >&2; }
usage() {
  sed -n '2,8p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
  cat >&2 <<'EOF'

Options:
  --image DIR            output of `microfaasctl image build --target beaglebone` (required)
  --device /dev/sdX      write this card (refused if mounted or the system disk; asks first)
  --out FILE.img         write a card image file instead, for dd
  --worker NAME          the board's Worker name (default: bbb-unset, with a warning)
  --orchestrator H:P     the agent endpoint the board dials (numeric address)
  --ip VALUE             kernel ip=: CLIENT::GATEWAY:NETMASK:HOSTNAME:eth0:off
  --token-file FILE      put this board's token in uEnv.txt (else the image's baked-in one)
  --console TTY          kernel console (default ttyS0,115200n8, the BeagleBone's UART0)
  --dtb FILE             device tree to boot (default the image's am335x-boneblack.dtb)
  --falcon               boot through the SPL's falcon mode (see the comment at the top of
                         this script); the U-Boot path stays on the card as the fallback
  --falcon-addrs K,A     kernel load and SPL args addresses (default 0x80008000,0x80F80000)
  --uboot DIR            MLO and u-boot.img to use instead of Debian's u-boot-omap
  --size-mib N           card image size (default 64)
  --yes                  do not ask before writing --device
EOF
  exit 2
}

image='' device='' out='' worker='' orchestrator='' ip='' uboot='' token_file='' yes=''
falcon='' dtb='' console='' falcon_addrs=0x80008000,0x80F80000
size_mib=64
while [ $# -gt 0 ]; do
  case "$1" in
    --image) image=${2:?}; shift 2 ;;
    --device) device=${2:?}; shift 2 ;;
    --out) out=${2:?}; shift 2 ;;
    --worker) worker=${2:?}; shift 2 ;;
    --orchestrator) orchestrator=${2:?}; shift 2 ;;
    --ip) ip=${2:?}; shift 2 ;;
    --token-file) token_file=${2:?}; shift 2 ;;
    --uboot) uboot=${2:?}; shift 2 ;;
    --size-mib) size_mib=${2:?}; shift 2 ;;
    --falcon) falcon=1; shift ;;
    --falcon-addrs) falcon_addrs=${2:?}; shift 2 ;;
    --dtb) dtb=${2:?}; shift 2 ;;
    --console) console=${2:?}; shift 2 ;;
    --yes) yes=1; shift ;;
    -h|--help) usage ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
done

[ -n "$image" ] || die "--image DIR is required (microfaasctl image build --target beaglebone --out DIR)"
[ -n "$device" ] || [ -n "$out" ] || die "give --device /dev/sdX or --out FILE.img"
[ -z "$device" ] || [ -z "$out" ] || die "--device and --out exclude each other"
for f in zImage am335x-boneblack.dtb initramfs.cpio.gz uEnv.txt boot.scr; do
  [ -s "$image/$f" ] || die "$image/$f is missing: not a beaglebone image (image build --target beaglebone)"
done
# U-Boot values are single words; a space or ';' would split the boot command.
for pair in "worker=$worker" "orchestrator=$orchestrator" "ip=$ip" "console=$console"; do
  v=${pair#*=}
  case "$v" in *[[:space:]\;\$\"\'\\]*) die "--${pair%%=*} '$v': one word, no spaces, quotes, ';' or '\$'" ;; esac
done

dtb=${dtb:-$image/am335x-boneblack.dtb}
[ -s "$dtb" ] || die "--dtb $dtb: no such device tree"
if [ -n "$falcon" ]; then
  case "$falcon_addrs" in
    0x[0-9a-fA-F]*,0x[0-9a-fA-F]*) ;;
    *) die "--falcon-addrs '$falcon_addrs': give KERNEL,ARGS in hex, e.g. 0x80008000,0x80F80000" ;;
  esac
  for tool in mkimage fdtput perl; do
    command -v "$tool" >/dev/null || die "'$tool' not found (--falcon): run hack/install-deps.sh"
  done
fi

# --- refusals for a real device, before anything is written --------------------------------
if [ -n "$device" ]; then
  [ -b "$device" ] || die "$device is not a block device"
  dev=$(readlink -f "$device")
  # Every filesystem mounted from this device or one of its partitions.
  mounted=$(lsblk -nrpo NAME,MOUNTPOINTS "$dev" 2>/dev/null | awk 'NF > 1 {print $1 " on " $2}' || true)
  if [ -z "$mounted" ]; then
    mounted=$(lsblk -nrpo NAME "$dev" | while read -r part; do
      findmnt -nro SOURCE,TARGET -S "$part" 2>/dev/null || true
    done)
  fi
  [ -z "$mounted" ] || die "$device is mounted ($(echo "$mounted" | tr '\n' ' ')); unmount it first"
  # The disks behind /, /boot, /usr and active swap.
  system=()
  for mp in / /boot /usr; do
    src=$(findmnt -nro SOURCE -T "$mp" 2>/dev/null || true)
    [ -b "$src" ] && system+=("$src")
  done
  while read -r sw _; do [ -b "$sw" ] && system+=("$sw"); done < <(tail -n +2 /proc/swaps)
  for s in ${system[@]+"${system[@]}"}; do
    s=$(readlink -f "$s")
    disk=$(lsblk -nrpso NAME "$s" 2>/dev/null | tail -n 1)
    if [ "$s" = "$dev" ] || [ "${disk:-}" = "$dev" ]; then
      die "$device holds this system's $s; refusing to overwrite the system disk"
    fi
  done
fi

for tool in sfdisk mkfs.vfat mcopy; do
  command -v "$tool" >/dev/null || die "'$tool' not found: run hack/install-deps.sh"
done

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# --- U-Boot (MLO = SPL, u-boot.img) ------------------------------------------------------------
if [ -z "$uboot" ]; then
  cache=${MICROFAAS_CACHE:-$HOME/.cache/microfaas}/u-boot-omap
  if [ ! -s "$cache/MLO" ] || [ ! -s "$cache/u-boot.img" ]; then
    log "fetching Debian's u-boot-omap (armhf) with apt-get download"
    mkdir -p "$work/deb" "$cache"
    (cd "$work/deb" && apt-get download u-boot-omap:armhf >/dev/null 2>&1) \
      || die "apt-get download u-boot-omap:armhf failed (dpkg --add-architecture armhf && apt-get update), or pass --uboot DIR"
    dpkg -x "$work"/deb/u-boot-omap_*.deb "$work/deb/x"
    cp "$work/deb/x/usr/lib/u-boot/am335x_boneblack/MLO" "$work/deb/x/usr/lib/u-boot/am335x_boneblack/u-boot.img" "$cache/"
  fi
  uboot=$cache
fi
[ -s "$uboot/MLO" ] && [ -s "$uboot/u-boot.img" ] || die "$uboot has no MLO and u-boot.img"

# --- this board's uEnv.txt -------------------------------------------------------------------
cp "$image/uEnv.txt" "$work/uEnv.txt"
setvar() { sed -i "s|^$1=.*|$1=$2|" "$work/uEnv.txt"; }
[ -z "$worker" ] || setvar microfaas_worker "$worker"
[ -z "$orchestrator" ] || setvar microfaas_orchestrator "$orchestrator"
[ -z "$ip" ] || setvar microfaas_ip "$ip"
[ -z "$console" ] || setvar mf_console "$console"
if [ -n "$token_file" ]; then
  token=$(tr -d '[:space:]' <"$token_file") || die "cannot read $token_file"
  setvar microfaas_token "$token"
fi
grep -q '^microfaas_worker=bbb-unset$' "$work/uEnv.txt" && log "warning: no --worker: the board will call itself bbb-unset"

# --- falcon mode: uImage, this board's args, an MLO that boots the OS ------------------------
files=("$uboot/MLO" "$uboot/u-boot.img")
if [ -n "$falcon" ]; then
  kaddr=$((${falcon_addrs%,*})) aaddr=$((${falcon_addrs#*,}))
  SOURCE_DATE_EPOCH=0 mkimage -A arm -O linux -T kernel -C none -a "$(printf 0x%x "$kaddr")" -e "$(printf 0x%x "$kaddr")" \
    -n microfaas -d "$image/zImage" "$work/uImage" >/dev/null || die "mkimage could not wrap $image/zImage"
  val() { sed -n "s/^$1=//p" "$work/uEnv.txt"; }
  # The same command line boot.scr's uEnv.txt builds (mf_args), fixed at flash time.
  bootargs="console=$(val mf_console) quiet panic=-1 microfaas.worker=$(val microfaas_worker)"
  bootargs+=" microfaas.orchestrator=$(val microfaas_orchestrator) ip=$(val microfaas_ip)"
  token=$(val microfaas_token)
  [ -z "$token" ] || bootargs+=" microfaas.token=$token"
  # SPL grows the tree in place (fdt_shrink_to_minimum, memory fixups: a few KiB) before the
  # jump, so the initramfs starts well clear of it.
  rd_off=$((1 << 20))
  rd_size=$(stat -c %s "$image/initramfs.cpio.gz")
  cp "$dtb" "$work/args.dtb"
  fdtput -c "$work/args.dtb" /chosen 2>/dev/null || true
  fdtput -t s "$work/args.dtb" /chosen bootargs "$bootargs"
  fdtput -t x "$work/args.dtb" /chosen linux,initrd-start "$(printf %x $((aaddr + rd_off)))"
  fdtput -t x "$work/args.dtb" /chosen linux,initrd-end "$(printf %x $((aaddr + rd_off + rd_size)))"
  [ "$(stat -c %s "$work/args.dtb")" -le $((rd_off - 65536)) ] || die "$dtb is too large for falcon args"
  truncate -s "$rd_off" "$work/args.dtb"
  cat "$work/args.dtb" "$image/initramfs.cpio.gz" >"$work/args"
  # Debian's MLO keeps its environment nowhere: boot_os goes into the built-in one.
  perl -0777 -e '
    my $m = <STDIN>;
    if ($m =~ /\0boot_os=/) { print $m; exit 0 }
    my $n = () = $m =~ /\0bootdelay=\d\0/g;
    $n == 1 or die "found $n bootdelay entries in its built-in environment, expected 1\n";
    $m =~ s/\0bootdelay=\d\0/\0boot_os=yes\0/;
    print $m;' <"$uboot/MLO" >"$work/MLO" || die "$uboot/MLO: cannot set boot_os in its environment"
  files=("$work/MLO" "$uboot/u-boot.img" "$work/uImage" "$work/args")
fi

# --- the card image: MBR + one FAT32 partition from 1 MiB ------------------------------------
part_mib=$((size_mib - 1))
fat=$work/fat.img
truncate -s "${part_mib}M" "$fat"
mkfs.vfat -F 32 -n MICROFAAS "$fat" >/dev/null
# MLO first: the AM335x boot ROM reads it from the FAT root.
for f in "${files[@]}" "$image/zImage" "$image/initramfs.cpio.gz" "$image/boot.scr" \
         "$work/uEnv.txt"; do
  mcopy -i "$fat" "$f" "::$(basename "$f")"
done
mcopy -i "$fat" "$dtb" "::am335x-boneblack.dtb"
card=$work/card.img
truncate -s "${size_mib}M" "$card"
echo 'start=2048, type=c, bootable' | sfdisk --quiet "$card"
dd if="$fat" of="$card" bs=1M seek=1 conv=notrunc status=none

if [ -n "$out" ]; then
  mv "$card" "$out"
  log "wrote $out (${size_mib} MiB): dd if=$out of=/dev/sdX bs=4M conv=fsync"
  exit 0
fi

if [ -z "$yes" ]; then
  read -r -p "Overwrite $device ($(lsblk -ndo SIZE,MODEL "$dev" | xargs))? Type yes: " answer
  [ "$answer" = yes ] || die "not confirmed; nothing written"
fi
log "writing $device"
dd if="$card" of="$dev" bs=4M conv=fsync status=none
sync
log "done: $device boots worker ${worker:-bbb-unset}${falcon:+ (falcon mode)}"
