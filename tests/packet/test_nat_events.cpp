// NAT event logging ([nat_events]) through the whole pipeline: a translated session's creation
// and end come off the worker's ring, and the control side writes them to a file and a syslog
// collector (a real UDP socket) as the lines an abuse report needs, exact.
#include <arpa/inet.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>
#include <rte_ring_elem.h>

#include <filesystem>
#include <fstream>

#include "control/event_log.hpp"
#include "packet/packet_test.hpp"

namespace natgw::test {
namespace {

class NatEvents : public ::testing::Test {
 protected:
  NatEvents() : p(std::string(kLabConfig)) {
    lab_neighbours(p);
    dir = std::filesystem::temp_directory_path() / ("natgw-events-" + std::to_string(::getpid()));
    std::filesystem::create_directories(dir);
    // A syslog collector: a UDP socket on a port the kernel picks.
    rx = ::socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ::bind(rx, reinterpret_cast<sockaddr*>(&a), sizeof a);
    socklen_t len = sizeof a;
    ::getsockname(rx, reinterpret_cast<sockaddr*>(&a), &len);
    cfg.file = (dir / "events.log").string();
    cfg.syslog_addr = INADDR_LOOPBACK;
    cfg.syslog_port = ntohs(a.sin_port);
  }
  ~NatEvents() override {
    ::close(rx);
    std::filesystem::remove_all(dir);
  }
  std::vector<std::string> file_lines() const {
    std::ifstream in(cfg.file);
    std::vector<std::string> v;
    for (std::string l; std::getline(in, l);) v.push_back(l);
    return v;
  }
  std::vector<std::string> datagrams() const {
    std::vector<std::string> v;
    char buf[2048];
    for (ssize_t n; (n = ::recv(rx, buf, sizeof buf, 0)) > 0;) v.emplace_back(buf, static_cast<size_t>(n));
    return v;
  }
  // The wall clock moves with the workers' (manual) clock: 2025-12-02T18:00:00.000Z at its 0.
  static constexpr int64_t kBase = 1764698400000;
  size_t drain() {
    const uint32_t now = p.worker().now_ms();
    return log.drain(p.ctx.events, kBase + now, now);
  }
  Pipeline p;
  std::filesystem::path dir;
  int rx = -1;
  config::NatEvents cfg;
  control::EventLog log;
};

TEST_F(NatEvents, ASessionsCreationAndEndAreLoggedExactly) {
  log.configure(cfg);
  p.ctx.sessions[0]->set_event_ring(p.ctx.events[0]);
  p.rx(kInside, build_frame(client(IPPROTO_UDP, "203.0.113.10", 40000, 53)));
  const auto out = ipv4_only(p.out(kInternet));
  ASSERT_EQ(out.size(), 1u);
  const uint16_t port = parse_frame(out[0]).sport;
  p.advance(5'000);
  p.rx(kInside, build_frame(client(IPPROTO_UDP, "203.0.113.10", 40000, 53)));  // its last packet, 5 s later
  p.out(kInternet);
  EXPECT_EQ(drain(), 1u);
  p.advance(301'000);  // past the UDP timeout
  p.expire_all();
  EXPECT_EQ(drain(), 1u);
  const auto lines = file_lines();
  ASSERT_EQ(lines.size(), 2u);
  const std::string flow =
      " proto=udp inside=192.168.10.2:40000 outside=10.0.3.10:" + std::to_string(port) + " remote=203.0.113.10:53";
  // Created at the workers' 1,000 ms, last packet at 6,000 (the end), drained 301 s later.
  const std::string t0 = "2025-12-02T18:00:01.000Z", t1 = "2025-12-02T18:00:06.000Z";
  EXPECT_EQ(lines[0], t0 + " session-create" + flow);
  EXPECT_EQ(lines[1], t1 + " session-delete" + flow + " start=" + t0) << "the end is the session's last packet";
  // The same two records as RFC 5424 messages: facility local0, severity info, MSGID NAT44.
  const auto d = datagrams();
  ASSERT_EQ(d.size(), 2u);
  char host[256] = {};
  ::gethostname(host, sizeof host - 1);
  const std::string head = std::string(" ") + host + " natgw " + std::to_string(::getpid()) + " NAT44 - ";
  EXPECT_EQ(d[0], "<134>1 " + t0 + head + "session-create" + flow);
  EXPECT_EQ(d[1], "<134>1 " + t1 + head + "session-delete" + flow + " start=" + t0);
  EXPECT_EQ(log.logged(nat::NatEventKind::kCreate), 1u);
  EXPECT_EQ(log.logged(nat::NatEventKind::kDelete), 1u);
  EXPECT_EQ(log.write_errors(), 0u);
}

// The workers' 32-bit millisecond clock wraps every 49.7 days: a session across the wrap keeps
// its true times (they are taken back from now, not forward from the clock's origin).
TEST_F(NatEvents, TimesAreRightAcrossTheClocksWrap) {
  log.configure(cfg);
  p.ctx.sessions[0]->set_event_ring(p.ctx.events[0]);
  p.worker().set_clock_ms(0xFFFFFC18u);  // 1,000 ms before the wrap
  p.rx(kInside, build_frame(client(IPPROTO_UDP, "203.0.113.10", 40000, 53)));
  p.advance(5'000);  // its last packet, after the wrap (the clock reads 4,000)
  p.rx(kInside, build_frame(client(IPPROTO_UDP, "203.0.113.10", 40000, 53)));
  p.advance(301'000);
  p.expire_all();
  const uint32_t now = p.worker().now_ms();
  const int64_t wall = 1764698400000 + 306'000;  // 18:00:00.000 at the session's start, drained 306 s later
  EXPECT_EQ(log.drain(p.ctx.events, wall, now), 2u);
  const auto lines = file_lines();
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_EQ(lines[0].substr(0, 39), "2025-12-02T18:00:00.000Z session-create");
  EXPECT_EQ(lines[1].substr(0, 39), "2025-12-02T18:00:05.000Z session-delete");
  EXPECT_NE(lines[1].find(" start=2025-12-02T18:00:00.000Z"), std::string::npos) << lines[1];
}

// A flood of events: each drain takes a budget, from every worker's ring in turn.
TEST(NatEventsTwoWorkers, DrainsEveryRingInTurnWithinItsBudget) {
  Pipeline p(kLabConfig, 2);
  lab_neighbours(p);
  config::NatEvents cfg;
  cfg.file = "/dev/null";
  control::EventLog log;
  log.configure(cfg);
  for (uint16_t w = 0; w < 2; ++w) p.ctx.sessions[w]->set_event_ring(p.ctx.events[w]);
  std::vector<std::vector<uint8_t>> frames;
  for (int i = 0; i < 400; ++i)  // hosts of both workers, 2 flows each
    for (uint16_t sport = 40000; sport < 40002; ++sport)
      frames.push_back(build_frame(client(IPPROTO_UDP, "203.0.113.10", sport, 53,
                                          ("192.168.1" + std::to_string(i / 200) + "." + std::to_string(2 + i % 200)).c_str())));
  for (size_t i = 0; i < frames.size(); i += 32)
    p.rx(kInside, std::vector<std::vector<uint8_t>>(frames.begin() + i, frames.begin() + std::min(frames.size(), i + 32)));
  EXPECT_EQ(ipv4_only(p.out(kInternet)).size(), 800u);
  const unsigned c0 = rte_ring_count(p.ctx.events[0]), c1 = rte_ring_count(p.ctx.events[1]);
  ASSERT_EQ(c0 + c1, 800u);
  ASSERT_GT(c0, 200u);
  ASSERT_GT(c1, 200u);
  EXPECT_EQ(log.drain(p.ctx.events, 1764698400000, 1000, 256), 256u);
  EXPECT_EQ(rte_ring_count(p.ctx.events[0]), c0 - 128) << "half the budget from each ring";
  EXPECT_EQ(rte_ring_count(p.ctx.events[1]), c1 - 128);
  EXPECT_TRUE(control::EventLog::pending(p.ctx.events));
  while (control::EventLog::pending(p.ctx.events)) log.drain(p.ctx.events, 1764698400000, 1000);
  EXPECT_EQ(log.logged(nat::NatEventKind::kCreate), 800u);
}

// Only translated sessions: untranslated flows an ACL tracks are not NAT events; nothing is queued
// while logging is off; TCP and ICMP name their protocol (ICMP: the identifiers as ports).
TEST_F(NatEvents, OnlyTranslatedSessionsAndOnlyWhileOn) {
  p.rx(kInside, build_frame(client(IPPROTO_UDP, "203.0.113.10", 40000, 53)));  // logging off
  EXPECT_EQ(ipv4_only(p.out(kInternet)).size(), 1u);
  EXPECT_EQ(drain(), 0u);
  log.configure(cfg);
  p.ctx.sessions[0]->set_event_ring(p.ctx.events[0]);
  reload(p, std::string(kLabConfig) + "[[acl]]\naction = \"allow\"\n", 2);
  auto tcp = client(IPPROTO_TCP, "203.0.113.10", 40001, 443);
  p.rx(kInside, build_frame(tcp));
  auto echo = client(IPPROTO_ICMP, "203.0.113.10", 0, 0);
  echo.icmp_type = 8;
  echo.sport = 777;  // identifier
  p.rx(kInside, build_frame(echo));
  // An untranslated flow (not from a [[snat]] source), tracked for the ACL: no event.
  p.rx(kInside, build_frame(client(IPPROTO_UDP, "203.0.113.10", 40002, 53, "172.16.0.9")));
  EXPECT_EQ(ipv4_only(p.out(kInternet)).size(), 3u);
  EXPECT_EQ(drain(), 2u);
  const auto lines = file_lines();
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_NE(lines[0].find(" session-create proto=tcp inside=192.168.10.2:40001 outside=10.0.3.10:"), std::string::npos)
      << lines[0];
  EXPECT_NE(lines[1].find(" session-create proto=icmp inside=192.168.10.2:777 outside=10.0.3.10:"), std::string::npos)
      << lines[1];
  EXPECT_NE(lines[1].find(" remote=203.0.113.10:0"), std::string::npos) << lines[1];
}

// A ring the control thread does not drain fills: the worker drops (and counts) events, never waits.
TEST_F(NatEvents, AFullRingDropsAndCounts) {
  rte_ring* small = rte_ring_create_elem("ngw_ev_test", sizeof(nat::NatEvent), 4, SOCKET_ID_ANY,
                                         RING_F_SP_ENQ | RING_F_SC_DEQ);
  ASSERT_NE(small, nullptr);
  p.ctx.sessions[0]->set_event_ring(small);
  for (uint16_t sport = 40000; sport < 40006; ++sport)
    p.rx(kInside, build_frame(client(IPPROTO_UDP, "203.0.113.10", sport, 53)));
  EXPECT_EQ(ipv4_only(p.out(kInternet)).size(), 6u) << "translation goes on";
  EXPECT_EQ(rte_ring_count(small), 3u);
  EXPECT_EQ(p.ctx.sessions[0]->stats().events_lost.get(), 3u);
  p.ctx.sessions[0]->set_event_ring(nullptr);
  rte_ring_free(small);
}

// A file that cannot be opened is refused with the config's place and the reason; the old target stays.
TEST_F(NatEvents, AnUnopenableFileIsRefused) {
  log.configure(cfg);
  config::NatEvents bad = cfg;
  bad.file = (dir / "no-such-dir" / "events.log").string();
  bad.loc = {"natgw.toml", 40};
  try {
    log.configure(bad);
    ADD_FAILURE() << "configured";
  } catch (const std::runtime_error& e) {
    EXPECT_EQ(std::string(e.what()), "natgw.toml:40: nat_events.file " + bad.file + ": No such file or directory");
  }
  p.ctx.sessions[0]->set_event_ring(p.ctx.events[0]);
  p.rx(kInside, build_frame(client(IPPROTO_UDP, "203.0.113.10", 40000, 53)));
  EXPECT_EQ(drain(), 1u);
  EXPECT_EQ(file_lines().size(), 1u) << "the running target kept logging";
}

// logrotate renames the file and reloads natgw: the next events go to a new file of the old name.
TEST_F(NatEvents, AReloadReopensTheFile) {
  log.configure(cfg);
  p.ctx.sessions[0]->set_event_ring(p.ctx.events[0]);
  p.rx(kInside, build_frame(client(IPPROTO_UDP, "203.0.113.10", 40000, 53)));
  EXPECT_EQ(drain(), 1u);
  std::filesystem::rename(cfg.file, cfg.file + ".1");
  log.configure(cfg);
  p.rx(kInside, build_frame(client(IPPROTO_UDP, "203.0.113.10", 40001, 53)));
  EXPECT_EQ(drain(), 1u);
  const auto now = file_lines();
  ASSERT_EQ(now.size(), 1u);
  EXPECT_NE(now[0].find("inside=192.168.10.2:40001 "), std::string::npos) << now[0];
  std::ifstream old(cfg.file + ".1");
  std::string line;
  ASSERT_TRUE(std::getline(old, line));
  EXPECT_NE(line.find("inside=192.168.10.2:40000 "), std::string::npos) << line;
}

}  // namespace
}  // namespace natgw::test
