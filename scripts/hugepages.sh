#!/usr/bin/env bash
# Reserve and mount hugepages for natgw (DPDK). Idempotent: safe at every boot and before every start
# (deploy/natgw.service runs it as ExecStartPre). It only ever raises the reservation, never lowers it.
#
#   scripts/hugepages.sh SIZE [--page-size 2M|1G] [--mount DIR] [--dry-run]
#     SIZE        total hugepage memory wanted, e.g. 4G, 2048M (a plain number is MB)
#     --page-size 2M (default) or 1G (1G pages are best reserved on the kernel command line:
#                 default_hugepagesz=1G hugepagesz=1G hugepages=4)
#     --mount     hugetlbfs mount point (default /dev/hugepages); natgw's eal = ["--in-memory", ...] does
#                 not need it, other DPDK tools (dpdk-testpmd, dpdk-proc-info) do
#     --dry-run   say what would be done, change nothing
#
# Sizing: the mbuf pool and rings take a few hundred MB; the session table ~122 B per session slot
# (max_sessions x workers; ~154 B with a per-host limit), so 10M sessions want ~1.25 GB more. Without an
# IOMMU (most EC2 instances, vfio-pci in no-IOMMU mode or igb_uio) hugepages are mandatory: DPDK needs
# physical addresses.
# Exit status: 0 reserved and mounted, 1 the kernel could not reserve enough (memory fragmented: reserve at
# boot on the kernel command line, or reboot and run this early), 2 usage.
set -euo pipefail

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2; }

size="" page="2M" mnt="/dev/hugepages" dry=0
while (($#)); do
  case "$1" in
    --page-size) page=${2:?}; shift 2 ;;
    --mount) mnt=${2:?}; shift 2 ;;
    --dry-run) dry=1; shift ;;
    -h|--help) usage ;;
    -*) echo "hugepages: unknown option $1" >&2; usage ;;
    *) [[ -z $size ]] || usage; size=$1; shift ;;
  esac
done
[[ -n $size ]] || usage

to_mb() {  # 4G -> 4096, 512M -> 512, 512 -> 512
  local v=${1^^}
  case "$v" in
    *G) echo $(( ${v%G} * 1024 )) ;;
    *M) echo "${v%M}" ;;
    *[!0-9]*|'') echo "hugepages: bad size '$1' (e.g. 4G or 2048M)" >&2; exit 2 ;;
    *) echo "$v" ;;
  esac
}
want_mb=$(to_mb "$size")
case "${page^^}" in
  2M) page_kb=2048 ;;
  1G) page_kb=1048576 ;;
  *) echo "hugepages: --page-size must be 2M or 1G" >&2; exit 2 ;;
esac
pages=$(( (want_mb * 1024 + page_kb - 1) / page_kb ))
sysdir=/sys/kernel/mm/hugepages/hugepages-${page_kb}kB
[[ -d $sysdir ]] || { echo "hugepages: this kernel or CPU has no ${page} pages ($sysdir missing)" >&2; exit 1; }

run() { if ((dry)); then echo "would run: $*"; else "$@"; fi; }

have=$(<"$sysdir/nr_hugepages")
if (( have >= pages )); then
  echo "hugepages: $have x $page reserved (>= $pages wanted): unchanged"
else
  echo "hugepages: reserving $pages x $page (had $have)"
  if ((dry)); then echo "would write $pages to $sysdir/nr_hugepages"; else echo "$pages" > "$sysdir/nr_hugepages"; fi
  ((dry)) || have=$(<"$sysdir/nr_hugepages")
  if (( !dry && have < pages )); then
    echo "hugepages: the kernel reserved only $have of $pages ${page} pages (memory is fragmented)." >&2
    echo "hugepages: reserve them at boot instead (kernel command line: hugepages=$pages), or drop caches" \
         "(echo 3 > /proc/sys/vm/drop_caches; echo 1 > /proc/sys/vm/compact_memory) and retry" >&2
    exit 1
  fi
fi

# A hugetlbfs mount with this page size at $mnt.
if awk -v m="$mnt" '$2 == m && $3 == "hugetlbfs" { found = 1 } END { exit !found }' /proc/mounts; then
  echo "hugepages: hugetlbfs already mounted on $mnt"
else
  run mkdir -p "$mnt"
  run mount -t hugetlbfs -o "pagesize=$page" nodev "$mnt"
  ((dry)) || echo "hugepages: mounted hugetlbfs (pagesize=$page) on $mnt"
fi
free_pages=$(<"$sysdir/free_hugepages")
echo "hugepages: ${page} pages: total $have, free $free_pages"
