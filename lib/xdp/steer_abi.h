/* The contract between natgw_steer.bpf.c (kernel side) and XdpSteering (steering.cpp, user side).
 *
 * Plain C with fixed-size types so that the BPF object (clang -target bpf) and the C++ library agree on
 * every layout. Change it only together with both sides. XdpSteering checks each map's type, key size,
 * value size and entry count against this header and refuses a program that does not match, so a stale
 * natgw_steer.bpf.o next to a newer binary is an error at start, not silent mis-steering.
 */
#ifndef NATGW_XDP_STEER_ABI_H
#define NATGW_XDP_STEER_ABI_H

#ifdef __cplusplus
#include <cstdint>
typedef uint32_t natgw_u32;
typedef uint64_t natgw_u64;
#else
typedef __u32 natgw_u32;
typedef __u64 natgw_u64;
#endif

/* Name of the XDP program (the ELF section function) and of its maps: natgw finds them by these names on
 * the interface, and pins them under <pin_dir>/<map name>. BPF object names are at most 15 characters. */
#define NATGW_STEER_PROG_NAME "natgw_steer"
#define NATGW_STEER_MAP_XSKS "xsks_map"       /* XSKMAP: rx queue index -> AF_XDP socket (DPDK fills it) */
#define NATGW_STEER_MAP_HOST "host_addrs"     /* HASH: IPv4 (network order) -> 1: the kernel's addresses */
#define NATGW_STEER_MAP_NATGW "natgw_addrs"   /* HASH: IPv4 (network order) -> 1: natgw's own addresses */
#define NATGW_STEER_MAP_CONFIG "steer_config" /* ARRAY[1]: struct natgw_steer_config */
#define NATGW_STEER_MAP_STATS "steer_stats"   /* PERCPU_ARRAY[NATGW_STEER_NCOUNTERS]: struct natgw_steer_counter */

#define NATGW_STEER_MAX_QUEUES 256     /* xsks_map entries: queue ids 0..255 */
#define NATGW_STEER_MAX_HOST_ADDRS 64  /* kernel (host) addresses on the shared interface */
#define NATGW_STEER_MAX_NATGW_ADDRS 1024 /* natgw's interface address + SNAT pool addresses */

/* steer_config.flags */
#define NATGW_STEER_F_ENABLED (1u << 0)  /* off: every frame goes to the kernel (state right after load) */
#define NATGW_STEER_F_TRANSIT (1u << 1)  /* redirect IPv4 addressed to neither the host nor natgw (transit) */
#define NATGW_STEER_F_DHCP (1u << 2)     /* always give the kernel UDP 67 -> 68 (DHCP offers/acks) */

struct natgw_steer_config {
  natgw_u32 flags;    /* NATGW_STEER_F_* */
  natgw_u32 reserved; /* 0 */
};

/* One counter per verdict. "to natgw" counters count frames actually redirected to an AF_XDP socket; a
 * frame meant for natgw whose rx queue has no socket (natgw down, or not polling that queue) goes to the
 * kernel instead and is counted once in NATGW_STEER_C_FALLBACK. */
enum natgw_steer_counter_index {
  NATGW_STEER_C_PASS_HOST = 0,     /* IPv4 addressed to a host (kernel) address */
  NATGW_STEER_C_PASS_HOST_ARP,     /* ARP whose target is not a natgw address (host's, or anyone's) */
  NATGW_STEER_C_PASS_DHCP,         /* UDP 67 -> 68 */
  NATGW_STEER_C_PASS_BCAST,        /* IPv4 broadcast / multicast (link or IP level) */
  NATGW_STEER_C_PASS_NON_IPV4,     /* IPv6, LLDP, anything not IPv4 or ARP */
  NATGW_STEER_C_PASS_DISABLED,     /* steering not enabled (not configured yet, or turned off) */
  NATGW_STEER_C_PASS_MALFORMED,    /* truncated Ethernet/ARP/IPv4 header: let the kernel judge and count it */
  NATGW_STEER_C_PASS_OTHER,        /* transit while NATGW_STEER_F_TRANSIT is off */
  NATGW_STEER_C_XSK_NATGW,         /* IPv4 addressed to a natgw address -> AF_XDP */
  NATGW_STEER_C_XSK_NATGW_ARP,     /* ARP for a natgw address -> AF_XDP */
  NATGW_STEER_C_XSK_TRANSIT,       /* transit IPv4 -> AF_XDP */
  NATGW_STEER_C_FALLBACK,          /* meant for natgw but no AF_XDP socket on this queue -> kernel */
  NATGW_STEER_NCOUNTERS
};

struct natgw_steer_counter {
  natgw_u64 packets;
  natgw_u64 bytes;
};

#endif /* NATGW_XDP_STEER_ABI_H */
