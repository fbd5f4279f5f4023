#include "net/build.hpp"

#include <rte_arp.h>

#include <algorithm>
#include <cstring>

#include "net/checksum.hpp"

namespace natgw::net {

void ipv4_set_checksum(rte_ipv4_hdr* ip) {
  ip->hdr_checksum = 0;
  ip->hdr_checksum = csum_buffer(ip, static_cast<size_t>((ip->version_ihl & 0xf) * 4));
}

rte_mbuf* build_icmp_error(rte_mempool* pool, const rte_ipv4_hdr* orig_ip, uint16_t orig_len,
                           uint8_t type, uint8_t code, rte_be32_t src_be, uint16_t mtu) {
  rte_mbuf* m = rte_pktmbuf_alloc(pool);
  if (!m) return nullptr;
  const uint16_t quote = std::min<uint16_t>(
      orig_len, kIcmpErrorMaxLen - sizeof(rte_ipv4_hdr) - sizeof(IcmpHdr));
  const uint16_t ip_len = static_cast<uint16_t>(sizeof(rte_ipv4_hdr) + sizeof(IcmpHdr) + quote);
  auto* frame = reinterpret_cast<uint8_t*>(rte_pktmbuf_append(m, kEtherHdrLen + ip_len));
  if (!frame) {
    rte_pktmbuf_free(m);
    return nullptr;
  }
  auto* ip = reinterpret_cast<rte_ipv4_hdr*>(frame + kEtherHdrLen);
  std::memset(ip, 0, sizeof(*ip));
  ip->version_ihl = 0x45;
  ip->total_length = rte_cpu_to_be_16(ip_len);
  ip->time_to_live = 64;
  ip->next_proto_id = IPPROTO_ICMP;
  ip->src_addr = src_be;
  ip->dst_addr = orig_ip->src_addr;
  ipv4_set_checksum(ip);
  auto* icmp = reinterpret_cast<IcmpHdr*>(ip + 1);
  icmp->type = type;
  icmp->code = code;
  icmp->cksum = 0;
  icmp->id = 0;
  icmp->seq = rte_cpu_to_be_16(mtu);
  std::memcpy(icmp + 1, orig_ip, quote);
  icmp->cksum = csum_buffer(icmp, sizeof(IcmpHdr) + quote);
  return m;
}

void make_echo_reply(Ipv4Packet& p) {
  const rte_be32_t src = p.ip->src_addr;
  p.ip->src_addr = p.ip->dst_addr;
  p.ip->dst_addr = src;
  p.ip->time_to_live = 64;
  ipv4_set_checksum(p.ip);
  auto* icmp = reinterpret_cast<IcmpHdr*>(p.l4);
  // Type 8 -> 0 changes the first word only: incremental update.
  const uint16_t old_word = *reinterpret_cast<uint16_t*>(icmp);
  icmp->type = RTE_IP_ICMP_ECHO_REPLY;
  const uint16_t new_word = *reinterpret_cast<uint16_t*>(icmp);
  icmp->cksum = csum_apply(icmp->cksum, csum_delta16(old_word, new_word));
}

rte_mbuf* build_arp_request(rte_mempool* pool, const rte_ether_addr& our_mac, rte_be32_t our_ip_be,
                            rte_be32_t target_be) {
  rte_mbuf* m = rte_pktmbuf_alloc(pool);
  if (!m) return nullptr;
  auto* eth = reinterpret_cast<rte_ether_hdr*>(
      rte_pktmbuf_append(m, sizeof(rte_ether_hdr) + sizeof(rte_arp_hdr)));
  if (!eth) {
    rte_pktmbuf_free(m);
    return nullptr;
  }
  std::memset(&eth->dst_addr, 0xff, RTE_ETHER_ADDR_LEN);
  rte_ether_addr_copy(&our_mac, &eth->src_addr);
  eth->ether_type = rte_cpu_to_be_16(RTE_ETHER_TYPE_ARP);
  auto* arp = reinterpret_cast<rte_arp_hdr*>(eth + 1);
  arp->arp_hardware = rte_cpu_to_be_16(RTE_ARP_HRD_ETHER);
  arp->arp_protocol = rte_cpu_to_be_16(RTE_ETHER_TYPE_IPV4);
  arp->arp_hlen = RTE_ETHER_ADDR_LEN;
  arp->arp_plen = 4;
  arp->arp_opcode = rte_cpu_to_be_16(RTE_ARP_OP_REQUEST);
  rte_ether_addr_copy(&our_mac, &arp->arp_data.arp_sha);
  arp->arp_data.arp_sip = our_ip_be;
  std::memset(&arp->arp_data.arp_tha, 0, RTE_ETHER_ADDR_LEN);
  arp->arp_data.arp_tip = target_be;
  return m;
}

void make_arp_reply(rte_mbuf* m, const rte_ether_addr& our_mac) {
  auto* eth = rte_pktmbuf_mtod(m, rte_ether_hdr*);
  auto* arp = reinterpret_cast<rte_arp_hdr*>(eth + 1);
  const rte_be32_t asker_ip = arp->arp_data.arp_sip;
  const rte_be32_t our_ip = arp->arp_data.arp_tip;
  rte_ether_addr_copy(&arp->arp_data.arp_sha, &arp->arp_data.arp_tha);
  rte_ether_addr_copy(&arp->arp_data.arp_sha, &eth->dst_addr);
  rte_ether_addr_copy(&our_mac, &arp->arp_data.arp_sha);
  rte_ether_addr_copy(&our_mac, &eth->src_addr);
  arp->arp_data.arp_sip = our_ip;
  arp->arp_data.arp_tip = asker_ip;
  arp->arp_opcode = rte_cpu_to_be_16(RTE_ARP_OP_REPLY);
  // ARP frames are padded to 60 bytes on the wire; trim anything beyond the ARP body.
  const uint32_t len = sizeof(rte_ether_hdr) + sizeof(rte_arp_hdr);
  if (m->pkt_len > len) {
    m->data_len = static_cast<uint16_t>(len);
    m->pkt_len = len;
  }
}

}  // namespace natgw::net
