#!/usr/bin/env bash
# Hand an ENI (ENA device) to DPDK, or give it back to the kernel's ena driver.
#
#   scripts/bind-eni.sh bind IFACE|PCI [--driver vfio-pci|igb_uio] [--force] [--dry-run]
#   scripts/bind-eni.sh unbind PCI [--dry-run]          back to ena (the interface reappears in Linux)
#   scripts/bind-eni.sh status                          every ENA device, its driver and interface
#
# Drivers:
#   vfio-pci (default, in every Debian kernel). EC2 instances have no IOMMU, so vfio runs in no-IOMMU mode
#     (this script sets vfio's enable_unsafe_noiommu_mode=1 when /sys/kernel/iommu_groups is empty; the
#     kernel is then tainted, and DPDK needs hugepages: scripts/hugepages.sh). Debian's vfio-pci does not map
#     ENA's LLQ memory BAR write-combining, so LLQ (the fast TX path of ENA) runs slowly or, with
#     enable_llq=0, not at all, which costs a lot on 6th-generation instances and later.
#   igb_uio with wc_activate=1 (recommended for ENA): maps the LLQ BAR write-combining. Not in the Debian
#     kernel: install it with `apt-get install dpdk-kmods-dkms` (builds igb_uio.ko for the running kernel
#     through DKMS; needs the linux-headers package of that kernel). This script loads it with
#     wc_activate=1 and refuses an igb_uio already loaded without it.
#
# Safety: refuses (unless --force) to take the interface Linux reaches the instance metadata service
# through, which is the one SSH and SSM use: bind the extra ENIs, keep the primary one (eth0/ens5) for
# the host, or share it with natgw in AF_XDP mode instead (docs/ec2-guide.md). dpdk-devbind.py --status
# shows the same information as `status`.
# Exit status: 0 done, 1 refused or failed, 2 usage.
set -euo pipefail

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2; }
die() { echo "bind-eni: $*" >&2; exit 1; }
dry=0
run() { if ((dry)); then echo "would run: $*"; else "$@"; fi; }
write() {  # write VALUE FILE
  if ((dry)); then echo "would write '$1' to $2"; else printf '%s\n' "$1" > "$2"; fi
}

ENA_VENDOR=0x1d0f

pci_of() {  # IFACE or PCI -> PCI address
  local a=$1
  if [[ -e /sys/bus/pci/devices/$a ]]; then echo "$a"; return; fi
  [[ -e /sys/class/net/$a/device ]] || die "'$a' is neither a PCI address nor a network interface with a device"
  local pci; pci=$(basename "$(readlink -f "/sys/class/net/$a/device")")
  [[ -e /sys/bus/pci/devices/$pci ]] || die "$a is on $pci, not a PCI device"
  echo "$pci"
}

driver_of() { local d=/sys/bus/pci/devices/$1/driver; [[ -e $d ]] && basename "$(readlink -f "$d")" || echo none; }
iface_of() {
  local n
  for n in /sys/bus/pci/devices/"$1"/net/*; do [[ -e $n ]] && { basename "$n"; return 0; }; done
  return 1
}

status() {
  local dev found=0
  for dev in /sys/bus/pci/devices/*; do
    [[ $(<"$dev/vendor") == "$ENA_VENDOR" ]] || continue
    found=1
    local pci; pci=$(basename "$dev")
    printf '%s  driver=%-9s iface=%s\n' "$pci" "$(driver_of "$pci")" "$(iface_of "$pci" || true)"
  done
  ((found)) || echo "no ENA devices (vendor $ENA_VENDOR) on this machine"
  if [[ -z $(ls /sys/kernel/iommu_groups 2>/dev/null) ]]; then echo "IOMMU: none (vfio-pci needs no-IOMMU mode)"; fi
  if [[ -r /sys/module/vfio/parameters/enable_unsafe_noiommu_mode ]]; then
    echo "vfio enable_unsafe_noiommu_mode=$(</sys/module/vfio/parameters/enable_unsafe_noiommu_mode)"
  fi
  if [[ -r /sys/module/igb_uio/parameters/wc_activate ]]; then
    echo "igb_uio wc_activate=$(</sys/module/igb_uio/parameters/wc_activate)"
  fi
}

load_driver() {
  case "$1" in
    vfio-pci)
      run modprobe vfio-pci
      if [[ -z $(ls /sys/kernel/iommu_groups 2>/dev/null) ]]; then
        echo "bind-eni: no IOMMU: enabling vfio no-IOMMU mode (taints the kernel; hugepages are mandatory)"
        write 1 /sys/module/vfio/parameters/enable_unsafe_noiommu_mode
      fi ;;
    igb_uio)
      if [[ -r /sys/module/igb_uio/parameters/wc_activate ]]; then
        [[ $(</sys/module/igb_uio/parameters/wc_activate) == 1 ]] ||
          die "igb_uio is loaded without wc_activate=1: unbind its devices, rmmod igb_uio, and run this again"
      else
        modinfo igb_uio >/dev/null 2>&1 ||
          die "no igb_uio module: apt-get install dpdk-kmods-dkms linux-headers-$(uname -r)"
        run modprobe igb_uio wc_activate=1
      fi ;;
    *) die "unknown driver '$1' (vfio-pci or igb_uio)" ;;
  esac
}

bind() {
  local target=$1 driver=$2 force=$3 pci iface cur
  pci=$(pci_of "$target")
  [[ $(<"/sys/bus/pci/devices/$pci/vendor") == "$ENA_VENDOR" ]] || echo "bind-eni: warning: $pci is not an ENA device"
  cur=$(driver_of "$pci")
  if [[ $cur == "$driver" ]]; then echo "bind-eni: $pci already bound to $driver"; return; fi
  iface=$(iface_of "$pci" || true)
  if [[ -n $iface ]]; then
    local mgmt
    mgmt=$(ip -o route get 169.254.169.254 2>/dev/null | sed -n 's/.* dev \([^ ]*\).*/\1/p')
    if [[ $iface == "$mgmt" && $force == 0 ]]; then
      die "$iface ($pci) is the interface Linux uses for the metadata service, SSH and SSM: binding it would cut the host off (--force to do it anyway)"
    fi
    run ip link set "$iface" down
  fi
  load_driver "$driver"
  write "$driver" "/sys/bus/pci/devices/$pci/driver_override"
  [[ $cur == none ]] || write "$pci" "/sys/bus/pci/devices/$pci/driver/unbind"
  write "$pci" /sys/bus/pci/drivers_probe
  ((dry)) || [[ $(driver_of "$pci") == "$driver" ]] || die "$pci did not bind to $driver (dmesg says why)"
  echo "bind-eni: $pci${iface:+ ($iface)} -> $driver"
}

unbind() {
  local pci cur
  pci=$(pci_of "$1")
  cur=$(driver_of "$pci")
  if [[ $cur == ena ]]; then echo "bind-eni: $pci already on ena"; return; fi
  write "" "/sys/bus/pci/devices/$pci/driver_override"   # an empty override: any driver may claim it
  [[ $cur == none ]] || write "$pci" "/sys/bus/pci/devices/$pci/driver/unbind"
  run modprobe ena
  write "$pci" /sys/bus/pci/drivers_probe
  ((dry)) || [[ $(driver_of "$pci") == ena ]] || die "$pci did not return to ena (dmesg says why)"
  echo "bind-eni: $pci -> ena; interface: $(iface_of "$pci" || echo '?')"
}

(($#)) || usage
cmd=$1; shift
driver=vfio-pci force=0 target=""
while (($#)); do
  case "$1" in
    --driver) driver=${2:?}; shift 2 ;;
    --force) force=1; shift ;;
    --dry-run) dry=1; shift ;;
    -h|--help) usage ;;
    -*) echo "bind-eni: unknown option $1" >&2; usage ;;
    *) [[ -z $target ]] || usage; target=$1; shift ;;
  esac
done
case "$cmd" in
  status) status ;;
  bind) [[ -n $target ]] || usage; bind "$target" "$driver" "$force" ;;
  unbind) [[ -n $target ]] || usage; unbind "$target" ;;
  *) usage ;;
esac
