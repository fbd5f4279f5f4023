// natgwctl: talk to a running natgw over its control socket.
#include <cstdio>
#include <iostream>
#include <string>

#include "control/server.hpp"

namespace {
int usage(int rc) {
  std::fprintf(rc ? stderr : stdout,
               "usage: natgwctl [--socket PATH] COMMAND [ARG]\n"
               "commands:\n"
               "  stats              counters: interfaces, paths, sessions, drops, ARP, workers\n"
               "  sessions [ADDR]    active sessions (inside, outside or remote address ADDR)\n"
               "  routes             the LPM table in force\n"
               "  arp                neighbour table\n"
               "  acl                ACL rules with hit counters\n"
               "  metrics            the Prometheus exposition\n"
               "  health             ok (exit 0), or unhealthy and why, a reason a line (exit 1): a worker\n"
               "                     stopped polling, a port dead after a failed reset, a link down;\n"
               "                     no verdict (no answer, a natgw without the command): exit 3\n"
               "  reload             re-read the config file; errors leave the running config\n"
               "  version\n"
               "default socket: /run/natgw/natgw.sock (or $NATGW_SOCKET)\n"
               "exit status: 0 done, 1 refused (or unhealthy), 2 usage, 3 no natgw answers\n");
  return rc;
}
}  // namespace

int main(int argc, char** argv) {
  const char* env = std::getenv("NATGW_SOCKET");
  std::string socket = env ? env : "/run/natgw/natgw.sock";
  std::string line;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--socket" && i + 1 < argc) {
      socket = argv[++i];
    } else if (a == "--socket") {
      std::cerr << "natgwctl: --socket needs a path\n";
      return usage(2);
    } else if (a == "-h" || a == "--help") {
      return usage(0);
    } else {
      line += (line.empty() ? "" : " ") + a;
    }
  }
  if (line.empty()) return usage(2);
  try {
    // A reload rebuilds the routing tables (large prefix lists take a while): wait for its
    // verdict, within systemd's default 90 s for ExecReload.
    const int timeout_ms = line.rfind("reload", 0) == 0 ? 80000 : 5000;
    const natgw::control::Reply r = natgw::control::send_command(socket, line, timeout_ms);
    if (line == "health") {
      // The verdict is the answer either way: on stdout, the exit status says which. Any other refusal
      // (a natgw that does not know the command) is no verdict: 3, as when none answers.
      const char* nl = r.body.empty() || r.body.back() != '\n' ? "\n" : "";
      if (!r.ok && r.body != "unhealthy" && r.body.rfind("unhealthy\n", 0) != 0) {
        std::cerr << "natgwctl: " << r.body << nl;
        return 3;
      }
      std::cout << r.body << nl;
      return r.ok ? 0 : 1;
    }
    if (!r.ok) {
      std::cerr << "natgwctl: " << r.body << (r.body.empty() || r.body.back() != '\n' ? "\n" : "");
      return 1;
    }
    std::cout << r.body;
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "natgwctl: " << e.what() << "\n";
    return 3;
  }
}
