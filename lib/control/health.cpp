#include "control/health.hpp"

#include <cstdio>

namespace natgw::control {

std::string stuck_text(const WorkerWatchdog::Stuck& s, unsigned lcore) {
  char idle[32];
  std::snprintf(idle, sizeof(idle), "%.1f", std::chrono::duration<double>(s.idle).count());
  return "worker " + std::to_string(s.worker) + " (lcore " + std::to_string(lcore) +
         ") made no progress for " + idle + " s";
}

std::vector<std::string> health_reasons(const HealthInput& in) {
  std::vector<std::string> why;
  const auto lcore = [&](size_t w) { return w < in.lcores.size() ? in.lcores[w] : 0u; };
  if (!in.started) {
    for (size_t w = 0; w < in.polls.size(); ++w)
      if (in.polls[w] == 0)
        why.push_back("starting: worker " + std::to_string(w) + " (lcore " + std::to_string(lcore(w)) +
                      ") not polling yet");
  } else {
    for (const auto& s : in.stuck) why.push_back(stuck_text(s, lcore(s.worker)));
  }
  for (const auto& p : in.ports) {
    if (p.dead)
      why.push_back(p.name + ": port dead: its driver-requested reset failed (a restart probes it afresh)");
    else if (!p.link_up)
      why.push_back(p.name + ": link down");
  }
  return why;
}

}  // namespace natgw::control
