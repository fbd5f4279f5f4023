// munmap() that never pulls memory from under a worker (see unmap_guard.cpp for why).
#pragma once

#include <cstdint>

struct rte_rcu_qsbr;

namespace natgw {

// From now on a munmap() on the EAL interrupt thread (where the memif PMD drops a departed
// peer's rings) first waits for one grace period of `workers`. Arm it before the workers
// start (a grace period without registered workers ends at once).
void arm_unmap_guard(rte_rcu_qsbr* workers);
// No more waiting; returns once no munmap() waits on the grace period any more (the
// workers' QSBR variable can then be freed).
void disarm_unmap_guard();
// How many munmap() calls waited for the workers so far.
uint64_t unmap_guard_waits();

}  // namespace natgw
