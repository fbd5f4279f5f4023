#include "dataplane/counters.hpp"

namespace natgw::dp {

const char* drop_name(unsigned d) {
  static const char* const names[kDropCount] = {
      "malformed", "non_ipv4",   "not_for_us",     "ttl_exceeded", "no_route",
      "acl",       "no_port",    "table_full",     "no_session",   "arp_unresolved",
      "mtu",       "fragment",   "no_mbuf",        "tx_full",      "unsupported",
      "handoff_full", "host_limit", "host_port_limit",
  };
  return d < kDropCount ? names[d] : "unknown";
}

}  // namespace natgw::dp
