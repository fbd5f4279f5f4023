// One EAL per test process, without hugepages or PCI, so unit and packet tests
// run anywhere (CI, a laptop, a container).
#pragma once

#include <rte_eal.h>
#include <rte_mbuf.h>
#include <unistd.h>

#include <cstdlib>
#include <string>
#include <vector>

namespace natgw::test {

inline rte_mempool* eal_pool() {
  static rte_mempool* pool = [] {
    std::string prefix = "natgw-test-" + std::to_string(getpid());
    std::vector<std::string> args = {"natgw-test", "--no-huge", "-m", "256", "--no-pci",
                                     "--no-shconf", "--file-prefix", prefix, "-l", "0",
                                     "--log-level", "lib.eal:error"};
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    if (rte_eal_init(static_cast<int>(argv.size()), argv.data()) < 0) std::abort();
    rte_mempool* p = rte_pktmbuf_pool_create("test_pool", 8191, 0, 0, RTE_MBUF_DEFAULT_BUF_SIZE,
                                             SOCKET_ID_ANY);
    if (!p) std::abort();
    return p;
  }();
  return pool;
}

}  // namespace natgw::test
