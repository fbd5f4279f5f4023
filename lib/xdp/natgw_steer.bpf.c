// SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0)
/* natgw_steer: XDP program for the AF_XDP mode that shares an interface (an ENI) with the kernel.
 *
 * Steering is by destination address, never by port: replies to connections the host itself made (SSM
 * agent, instance metadata, DNS, package downloads) arrive on ephemeral ports that cannot be told apart
 * from NAT traffic, but they are always addressed to the host's own address.
 *
 *   frame                                             verdict
 *   ----------------------------------------------    ------------------------------------------------
 *   steering disabled (not configured yet)            kernel
 *   ARP whose target IP is a natgw address            natgw (AF_XDP)
 *   other ARP (the host's address, gratuitous, ...)   kernel
 *   not IPv4 (IPv6, LLDP, ...)                        kernel
 *   IPv4 to a host address                            kernel   (SSH, SSM, metadata and DNS replies, ...)
 *   UDP 67 -> 68 (DHCP offer/ack), if enabled         kernel
 *   IPv4 to a natgw address                           natgw    (replies to translated flows, ping, ...)
 *   IPv4 broadcast or multicast                       kernel
 *   any other IPv4 (transit), if enabled              natgw    (what natgw routes and translates)
 *
 * "natgw" is bpf_redirect_map(&xsks_map, rx_queue_index, XDP_PASS): when no AF_XDP socket is bound to
 * the frame's rx queue (natgw stopped or crashed, or not polling that queue) the frame goes to the kernel
 * instead, so the host never loses its management access to a dead natgw.
 *
 * The DPDK af_xdp PMD loads this object through its xdp_prog=PATH devarg: it loads the first program of
 * the object, attaches it to the interface and writes its AF_XDP sockets into the XSKMAP it finds by the
 * name "xsks_map". natgw then finds the program on the interface and fills the other maps (steering.cpp).
 * Every layout shared with user space is in steer_abi.h.
 *
 * No multi-buffer (frags): the program sees whole frames only, so the interface MTU must fit in one
 * page-sized XDP buffer (ENA: MTU <= 3498 while any XDP program is attached).
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "steer_abi.h"

struct {
  __uint(type, BPF_MAP_TYPE_XSKMAP);
  __uint(max_entries, NATGW_STEER_MAX_QUEUES);
  __type(key, __u32);
  __type(value, __u32);
} xsks_map SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_HASH);
  __uint(max_entries, NATGW_STEER_MAX_HOST_ADDRS);
  __type(key, __u32); /* IPv4, network byte order */
  __type(value, __u32);
} host_addrs SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_HASH);
  __uint(max_entries, NATGW_STEER_MAX_NATGW_ADDRS);
  __type(key, __u32); /* IPv4, network byte order */
  __type(value, __u32);
} natgw_addrs SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_ARRAY);
  __uint(max_entries, 1);
  __type(key, __u32);
  __type(value, struct natgw_steer_config);
} steer_config SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
  __uint(max_entries, NATGW_STEER_NCOUNTERS);
  __type(key, __u32);
  __type(value, struct natgw_steer_counter);
} steer_stats SEC(".maps");

/* ARP for Ethernet/IPv4 (RFC 826), as it is on the wire. */
struct arp_eth_ipv4 {
  __be16 htype;
  __be16 ptype;
  __u8 hlen;
  __u8 plen;
  __be16 oper;
  __u8 sha[ETH_ALEN];
  __be32 spa;
  __u8 tha[ETH_ALEN];
  __be32 tpa;
} __attribute__((packed));

#define ETH_P_ARP_BE bpf_htons(0x0806)
#define ETH_P_IP_BE bpf_htons(0x0800)

static __always_inline void count(__u32 index, __u64 bytes) {
  struct natgw_steer_counter *c = bpf_map_lookup_elem(&steer_stats, &index);
  if (c) { /* per-CPU: no atomics needed */
    c->packets += 1;
    c->bytes += bytes;
  }
}

static __always_inline int pass(__u32 index, __u64 bytes) {
  count(index, bytes);
  return XDP_PASS;
}

/* To natgw's AF_XDP socket on this rx queue, or to the kernel if there is none. */
static __always_inline int to_natgw(struct xdp_md *ctx, __u32 index, __u64 bytes) {
  long verdict = bpf_redirect_map(&xsks_map, ctx->rx_queue_index, XDP_PASS);
  count(verdict == XDP_REDIRECT ? index : NATGW_STEER_C_FALLBACK, bytes);
  return (int)verdict;
}

static __always_inline int is_key(void *map, __be32 addr) {
  __u32 key = addr;
  return bpf_map_lookup_elem(map, &key) != NULL;
}

SEC("xdp")
int natgw_steer(struct xdp_md *ctx) {
  void *data = (void *)(long)ctx->data;
  void *data_end = (void *)(long)ctx->data_end;
  const __u64 bytes = (__u64)(data_end - data);
  const __u32 zero = 0;

  const struct natgw_steer_config *cfg = bpf_map_lookup_elem(&steer_config, &zero);
  if (!cfg || !(cfg->flags & NATGW_STEER_F_ENABLED)) return pass(NATGW_STEER_C_PASS_DISABLED, bytes);
  const __u32 flags = cfg->flags;

  struct ethhdr *eth = data;
  if ((void *)(eth + 1) > data_end) return pass(NATGW_STEER_C_PASS_MALFORMED, bytes);

  if (eth->h_proto == ETH_P_ARP_BE) {
    struct arp_eth_ipv4 *arp = (void *)(eth + 1);
    if ((void *)(arp + 1) > data_end) return pass(NATGW_STEER_C_PASS_MALFORMED, bytes);
    if (arp->ptype == ETH_P_IP_BE && arp->plen == 4 && is_key(&natgw_addrs, arp->tpa))
      return to_natgw(ctx, NATGW_STEER_C_XSK_NATGW_ARP, bytes);
    return pass(NATGW_STEER_C_PASS_HOST_ARP, bytes);
  }
  if (eth->h_proto != ETH_P_IP_BE) return pass(NATGW_STEER_C_PASS_NON_IPV4, bytes);

  struct iphdr *ip = (void *)(eth + 1);
  if ((void *)(ip + 1) > data_end || ip->version != 4 || ip->ihl < 5)
    return pass(NATGW_STEER_C_PASS_MALFORMED, bytes);
  const __be32 daddr = ip->daddr;

  if (is_key(&host_addrs, daddr)) return pass(NATGW_STEER_C_PASS_HOST, bytes);

  /* DHCP offers and acks may be addressed to an address the host does not have yet (or broadcast). Only a
   * first fragment (or an unfragmented datagram) carries the UDP header. */
  if ((flags & NATGW_STEER_F_DHCP) && ip->protocol == IPPROTO_UDP && !(ip->frag_off & bpf_htons(0x1fff))) {
    struct udphdr *udp = (void *)ip + ip->ihl * 4;
    if ((void *)(udp + 1) <= data_end && udp->dest == bpf_htons(68) && udp->source == bpf_htons(67))
      return pass(NATGW_STEER_C_PASS_DHCP, bytes);
  }

  if (is_key(&natgw_addrs, daddr)) return to_natgw(ctx, NATGW_STEER_C_XSK_NATGW, bytes);

  /* 255.255.255.255, 224.0.0.0/4 and above, or a broadcast/multicast MAC: natgw forwards none of them. */
  if ((eth->h_dest[0] & 1) || (bpf_ntohl(daddr) >> 28) >= 0xe) return pass(NATGW_STEER_C_PASS_BCAST, bytes);

  if (!(flags & NATGW_STEER_F_TRANSIT)) return pass(NATGW_STEER_C_PASS_OTHER, bytes);
  return to_natgw(ctx, NATGW_STEER_C_XSK_TRANSIT, bytes);
}

char LICENSE[] SEC("license") = "GPL";
