// DPDK 22.11's memif PMD unmaps a peer's shared rings from the EAL interrupt thread the moment
// the peer's control socket closes (memif_disconnect: clear CONNECTED, then memif_free_regions),
// with no handshake with the lcore polling them. A worker inside rte_eth_rx_burst at that moment
// reads an unmapped ring and natgw dies of SIGSEGV (3 of 9 natgw runs of bench-throughput.sh,
// and tests/lab/test_memif_peer.py within a few peer exits at full load).
//
// natgw's executable therefore defines munmap() (exported, so the PMDs' calls resolve here):
// while the workers run, a munmap() on the EAL interrupt thread waits for one RCU grace period
// of the workers first. Every worker reports a quiescent state after each poll, so by then each
// has left any burst it had begun before the PMD cleared its flags, and every later burst sees
// the port disconnected and reads no ring. (The queues' eventfds, closed before the unmap, are
// not covered: a burst racing that close may read a closed or reused fd number. The window is a
// few instructions; the PMD would need a handshake to close it.)
// Only the interrupt thread waits: vhost's message thread unmaps while holding the queues'
// locks, which a worker's enqueue takes (waiting there would deadlock; vhost needs no help);
// workers, the main lcore and other threads unmap at once. A worker stuck in a burst therefore
// also holds up the interrupt thread's next unmap, no more.
#include "unmap_guard.hpp"

#include <rte_interrupts.h>
#include <rte_pause.h>
#include <rte_rcu_qsbr.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>

namespace natgw {
namespace {

std::atomic<rte_rcu_qsbr*> g_workers{nullptr};
std::atomic<int> g_in_guard{0};  // munmap() calls between their check and their grace period's end
std::atomic<uint64_t> g_waits{0};

}  // namespace

void arm_unmap_guard(rte_rcu_qsbr* workers) { g_workers.store(workers); }

void disarm_unmap_guard() {
  g_workers.store(nullptr);
  while (g_in_guard.load() != 0) rte_pause();
}

uint64_t unmap_guard_waits() { return g_waits.load(std::memory_order_relaxed); }

}  // namespace natgw

extern "C" int munmap(void* addr, size_t len) noexcept {
  using namespace natgw;
  if (rte_thread_is_intr()) {
    // Sequentially consistent with disarm_unmap_guard: either it sees us counted, or we see null.
    g_in_guard.fetch_add(1);
    if (rte_rcu_qsbr* q = g_workers.load()) {
      rte_rcu_qsbr_synchronize(q, RTE_QSBR_THRID_INVALID);
      g_waits.fetch_add(1, std::memory_order_relaxed);
    }
    g_in_guard.fetch_sub(1);
  }
  return static_cast<int>(syscall(SYS_munmap, addr, len));
}
