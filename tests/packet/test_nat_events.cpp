// NAT event logging ([nat_events]) through the whole pipeline: a translated session's creation
// and end come off the worker's ring, and the control side writes them to a file and a syslog
// collector (a real UDP socket) as the lines an abuse report needs, exact.
#include <arpa/inet.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>
#include <rte_ring_elem.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>

#include "control/event_log.hpp"
#include "packet/packet_test.hpp"

namespace natgw::test {
namespace {

class NatEvents : public ::testing::Test {
 protected:
  explicit NatEvents(const std::string& config = std::string(kLabConfig)) : p(config) {
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
  std::vector<std::string> file_lines_with(const char* word) const {
    std::vector<std::string> v;
    for (const auto& l : file_lines())
      if (l.find(word) != std::string::npos) v.push_back(l);
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

// A collector's decoding of IPFIX (RFC 7011), independent of the encoder: templates are learnt from
// template sets and data records read by them, each field as an unsigned big-endian number by IE id.
struct IpfixMessage {
  uint32_t sequence = 0, domain = 0, export_time = 0;
  bool had_template = false;
  std::vector<std::map<uint16_t, uint64_t>> records;
};

IpfixMessage decode_ipfix(const std::string& d, std::map<uint16_t, std::vector<std::pair<uint16_t, uint16_t>>>& templates) {
  const auto num = [&](size_t at, size_t len) {
    uint64_t v = 0;
    for (size_t i = 0; i < len; ++i) v = (v << 8) | static_cast<unsigned char>(d.at(at + i));
    return v;
  };
  IpfixMessage m;
  EXPECT_EQ(num(0, 2), 10u) << "IPFIX version";
  EXPECT_EQ(num(2, 2), d.size()) << "the header's length";
  m.export_time = static_cast<uint32_t>(num(4, 4));
  m.sequence = static_cast<uint32_t>(num(8, 4));
  m.domain = static_cast<uint32_t>(num(12, 4));
  for (size_t at = 16; at + 4 <= d.size();) {
    const auto id = static_cast<uint16_t>(num(at, 2));
    const size_t len = num(at + 2, 2);
    EXPECT_GE(len, 4u);
    if (len < 4 || at + len > d.size()) break;
    if (id == 2) {
      m.had_template = true;
      auto& t = templates[static_cast<uint16_t>(num(at + 4, 2))];
      t.clear();
      for (size_t f = 0, n = num(at + 6, 2); f < n; ++f)
        t.emplace_back(static_cast<uint16_t>(num(at + 8 + 4 * f, 2)), static_cast<uint16_t>(num(at + 10 + 4 * f, 2)));
    } else if (templates.count(id)) {
      size_t rec = 0;
      for (const auto& f : templates[id]) rec += f.second;
      for (size_t r = at + 4; r + rec <= at + len; r += rec) {
        std::map<uint16_t, uint64_t> fields;
        size_t off = r;
        for (const auto& f : templates[id]) fields[f.first] = num(off, f.second), off += f.second;
        m.records.push_back(fields);
      }
    } else {
      ADD_FAILURE() << "a data set (" << id << ") before its template";
    }
    at += len;
  }
  return m;
}

// The same sessions as the lines, as RFC 8158 NAT44 session records an IPFIX collector reads.
TEST_F(NatEvents, IpfixRecordsCarryTheSameSessions) {
  const int collector = ::socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(collector, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  socklen_t alen = sizeof a;
  ::getsockname(collector, reinterpret_cast<sockaddr*>(&a), &alen);
  config::NatEvents ipfix;
  ipfix.ipfix_addr = INADDR_LOOPBACK;
  ipfix.ipfix_port = ntohs(a.sin_port);
  ipfix.ipfix_domain = 42;
  log.configure(ipfix);
  EXPECT_TRUE(log.enabled());
  const auto messages = [&] {
    std::vector<std::string> v;
    char buf[2048];
    for (ssize_t n; (n = ::recv(collector, buf, sizeof buf, 0)) > 0;) v.emplace_back(buf, static_cast<size_t>(n));
    return v;
  };
  p.ctx.sessions[0]->set_event_ring(p.ctx.events[0]);
  p.rx(kInside, build_frame(client(IPPROTO_UDP, "203.0.113.10", 40000, 53)));
  const auto out = ipv4_only(p.out(kInternet));
  ASSERT_EQ(out.size(), 1u);
  const uint16_t port = parse_frame(out[0]).sport;
  p.advance(5'000);
  p.rx(kInside, build_frame(client(IPPROTO_UDP, "203.0.113.10", 40000, 53)));
  p.out(kInternet);
  EXPECT_EQ(drain(), 1u);
  p.advance(301'000);
  p.expire_all();
  EXPECT_EQ(drain(), 1u);
  const auto d = messages();
  ASSERT_EQ(d.size(), 2u) << "one message per drain that had events";
  std::map<uint16_t, std::vector<std::pair<uint16_t, uint16_t>>> templates;
  const IpfixMessage m0 = decode_ipfix(d[0], templates), m1 = decode_ipfix(d[1], templates);
  EXPECT_TRUE(m0.had_template);
  EXPECT_TRUE(m1.had_template) << "301 s after the last: again";
  EXPECT_EQ(m0.domain, 42u);
  EXPECT_EQ(m0.sequence, 0u);
  EXPECT_EQ(m1.sequence, 1u) << "data records before it";
  EXPECT_EQ(m1.export_time, (kBase + 307'000) / 1000) << "when it was sent";
  ASSERT_EQ(m0.records.size(), 1u);
  ASSERT_EQ(m1.records.size(), 1u);
  const int64_t t0 = kBase + 1'000, t1 = kBase + 6'000;  // created at the workers' 1,000 ms, last packet at 6,000
  for (const auto* r : {&m0.records[0], &m1.records[0]}) {
    EXPECT_EQ(r->at(4), 17u);                // protocolIdentifier
    EXPECT_EQ(r->at(8), 0xc0a80a02u);        // sourceIPv4Address 192.168.10.2
    EXPECT_EQ(r->at(7), 40000u);             // sourceTransportPort
    EXPECT_EQ(r->at(225), 0x0a00030au);      // postNATSourceIPv4Address 10.0.3.10
    EXPECT_EQ(r->at(227), port);             // postNAPTSourceTransportPort: the port the packet left with
    EXPECT_EQ(r->at(12), 0xcb00710au);       // destinationIPv4Address 203.0.113.10
    EXPECT_EQ(r->at(11), 53u);               // destinationTransportPort
    EXPECT_EQ(r->at(152), static_cast<uint64_t>(t0));  // flowStartMilliseconds
  }
  ASSERT_EQ(templates[256].size(), 11u);
  EXPECT_EQ(templates[256].back(), (std::pair<uint16_t, uint16_t>{153, 8})) << "flowEndMilliseconds, 8 bytes";
  EXPECT_EQ(m0.records[0].at(230), 4u) << "natEvent: NAT44 session create";
  EXPECT_EQ(m0.records[0].at(323), static_cast<uint64_t>(t0)) << "observationTimeMilliseconds: the creation";
  EXPECT_EQ(m0.records[0].at(153), static_cast<uint64_t>(t0))
      << "flowEndMilliseconds: its first packet so far";
  EXPECT_EQ(m1.records[0].at(230), 5u) << "natEvent: NAT44 session delete";
  EXPECT_EQ(m1.records[0].at(323), static_cast<uint64_t>(kBase + 307'000))
      << "observationTimeMilliseconds: the delete, when it was logged";
  EXPECT_EQ(m1.records[0].at(153), static_cast<uint64_t>(t1))
      << "flowEndMilliseconds: the session's last packet";
  EXPECT_EQ(log.write_errors(), 0u);

  // A burst of 100 new flows in one drain: messages within 1,400 bytes, every record once, the
  // sequence numbering records without a gap.
  for (uint16_t sport = 41000; sport < 41100; ++sport)
    p.rx(kInside, build_frame(client(IPPROTO_UDP, "203.0.113.10", sport, 53)));
  EXPECT_EQ(ipv4_only(p.out(kInternet)).size(), 100u);
  EXPECT_EQ(drain(), 100u);
  const auto burst = messages();
  ASSERT_EQ(burst.size(), 4u);
  uint32_t expect_seq = 2;
  std::set<uint64_t> sports;
  std::vector<size_t> counts;
  for (const auto& msg : burst) {
    EXPECT_LE(msg.size(), 1400u);
    const IpfixMessage m = decode_ipfix(msg, templates);
    EXPECT_FALSE(m.had_template) << "sent with the last message, at the same time";
    EXPECT_EQ(m.sequence, expect_seq);
    expect_seq += static_cast<uint32_t>(m.records.size());
    counts.push_back(m.records.size());
    for (const auto& r : m.records) sports.insert(r.at(7));
  }
  EXPECT_EQ(counts, (std::vector<size_t>{31, 31, 31, 7}))
      << "44-byte records, 31 in a message without the template";
  EXPECT_EQ(sports.size(), 100u);
  EXPECT_EQ(*sports.begin(), 41000u);

  // Another collector (a reload): a new transport session, its sequence from 0 and the template first.
  ipfix.ipfix_domain = 43;
  log.configure(ipfix);
  p.rx(kInside, build_frame(client(IPPROTO_UDP, "203.0.113.10", 42000, 53)));
  p.out(kInternet);
  EXPECT_EQ(drain(), 1u);
  const auto again = messages();
  ASSERT_EQ(again.size(), 1u);
  std::map<uint16_t, std::vector<std::pair<uint16_t, uint16_t>>> fresh;
  const IpfixMessage m2 = decode_ipfix(again[0], fresh);
  EXPECT_TRUE(m2.had_template);
  EXPECT_EQ(m2.sequence, 0u);
  EXPECT_EQ(m2.domain, 43u);
  EXPECT_EQ(m2.records.size(), 1u);
  ::close(collector);
}

// This process's IPv4 UDP sockets (to find the one an EventLog opened: the fds new after configure()).
std::set<int> udp_sockets() {
  std::set<int> v;
  for (const auto& e : std::filesystem::directory_iterator("/proc/self/fd")) {
    const int fd = std::stoi(e.path().filename().string());
    int type = 0, domain = 0;
    socklen_t len = sizeof type;
    if (::getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) != 0 || type != SOCK_DGRAM) continue;
    len = sizeof domain;
    if (::getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &len) == 0 && domain == AF_INET) v.insert(fd);
  }
  return v;
}

// A collector natgw cannot send to is counted in natgw_nat_events_errors_total, and once it can,
// the first message carries the template again (the failed one had it). The collector sits on lo's
// broadcast address: natgw's socket lacks SO_BROADCAST, so the kernel refuses (EACCES) until the test
// sets it on that socket, the same collector becoming reachable without a reload.
TEST_F(NatEvents, AFailedIpfixSendIsCountedAndTheTemplateGoesAgain) {
  const int collector = ::socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(0x7fffffff);  // 127.255.255.255
  ASSERT_EQ(::bind(collector, reinterpret_cast<sockaddr*>(&a), sizeof a), 0) << std::strerror(errno);
  socklen_t alen = sizeof a;
  ::getsockname(collector, reinterpret_cast<sockaddr*>(&a), &alen);
  {  // lo's broadcast route is what makes the send fail; a sandbox without it cannot run this test.
    const int probe = ::socket(AF_INET, SOCK_DGRAM, 0);
    const bool refused = ::sendto(probe, "x", 1, 0, reinterpret_cast<const sockaddr*>(&a), sizeof a) < 0 &&
                         errno == EACCES;
    ::close(probe);
    char drop[8];
    while (::recv(collector, drop, sizeof drop, 0) > 0) {
    }
    if (!refused) {
      ::close(collector);
      GTEST_SKIP() << "127.255.255.255 is not a broadcast address here: no send can be made to fail this way";
    }
  }
  const auto messages = [&] {
    std::vector<std::string> v;
    char buf[2048];
    for (ssize_t n; (n = ::recv(collector, buf, sizeof buf, 0)) > 0;)
      v.emplace_back(buf, static_cast<size_t>(n));
    return v;
  };
  config::NatEvents ipfix;
  ipfix.ipfix_addr = 0x7fffffff;
  ipfix.ipfix_port = ntohs(a.sin_port);
  const std::set<int> before = udp_sockets();
  log.configure(ipfix);
  std::vector<int> opened;
  for (int fd : udp_sockets())
    if (!before.count(fd)) opened.push_back(fd);
  ASSERT_EQ(opened.size(), 1u) << "the IPFIX socket";
  p.ctx.sessions[0]->set_event_ring(p.ctx.events[0]);
  p.rx(kInside, build_frame(client(IPPROTO_UDP, "203.0.113.10", 40000, 53)));
  p.out(kInternet);
  EXPECT_EQ(drain(), 1u);
  EXPECT_EQ(log.write_errors(), 1u) << "the record the failed message carried";
  EXPECT_TRUE(messages().empty());
  const int on = 1;
  ASSERT_EQ(::setsockopt(opened[0], SOL_SOCKET, SO_BROADCAST, &on, sizeof on), 0);
  p.advance(1'000);  // well within the template's ten seconds
  p.rx(kInside, build_frame(client(IPPROTO_UDP, "203.0.113.10", 40001, 53)));
  p.out(kInternet);
  EXPECT_EQ(drain(), 1u);
  auto d = messages();
  ASSERT_EQ(d.size(), 1u);
  std::map<uint16_t, std::vector<std::pair<uint16_t, uint16_t>>> templates;
  const IpfixMessage m = decode_ipfix(d[0], templates);
  EXPECT_TRUE(m.had_template) << "the failed message had it";
  EXPECT_EQ(m.sequence, 1u) << "the lost record counted: the collector sees the gap";
  ASSERT_EQ(m.records.size(), 1u);
  EXPECT_EQ(m.records[0].at(7), 40001u);
  p.rx(kInside, build_frame(client(IPPROTO_UDP, "203.0.113.10", 40002, 53)));
  p.out(kInternet);
  EXPECT_EQ(drain(), 1u);
  d = messages();
  ASSERT_EQ(d.size(), 1u);
  EXPECT_FALSE(decode_ipfix(d[0], templates).had_template) << "sent: not again before it is due";
  EXPECT_EQ(log.write_errors(), 1u);
  // IPFIX off: no target left, the socket closed.
  log.configure(config::NatEvents{});
  EXPECT_FALSE(log.enabled());
  EXPECT_EQ(udp_sockets(), before);
  ::close(collector);
}

// An IPFIX collector: a UDP socket on 127.0.0.1, a port the kernel picks.
struct Collector {
  Collector() {
    fd = ::socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
    socklen_t len = sizeof a;
    ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
    port = ntohs(a.sin_port);
  }
  ~Collector() { ::close(fd); }
  Collector(const Collector&) = delete;
  Collector& operator=(const Collector&) = delete;
  config::NatEvents config(uint32_t domain = 1) const {
    config::NatEvents c;
    c.ipfix_addr = INADDR_LOOPBACK;
    c.ipfix_port = port;
    c.ipfix_domain = domain;
    return c;
  }
  std::vector<IpfixMessage> messages() {  // what came since the last call, decoded
    std::vector<IpfixMessage> v;
    char buf[2048];
    for (ssize_t n; (n = ::recv(fd, buf, sizeof buf, 0)) > 0;)
      v.push_back(decode_ipfix(std::string(buf, static_cast<size_t>(n)), templates));
    return v;
  }
  int fd = -1;
  uint16_t port = 0;
  std::map<uint16_t, std::vector<std::pair<uint16_t, uint16_t>>> templates;
};

// A host refused at its limits: quota-exceeded lines (file, syslog) and RFC 8158 quota records
// (IPFIX), at most one a second per host, whichever limit it met.
class NatEventsQuota : public NatEvents {
 protected:
  NatEventsQuota() : NatEvents(std::string(kLabConfig) + "[nat]\nmax_sessions_per_host = 3\nmax_ports_per_host = 1\n") {}
  bool opens(const char* dst, uint16_t sport) {
    p.rx(kInside, build_frame(client(IPPROTO_UDP, dst, sport, 53)));
    return ipv4_only(p.out(kInternet)).size() == 1;
  }
};

TEST_F(NatEventsQuota, ARefusedHostIsLoggedOnceASecondByEveryTarget) {
  Collector c;
  auto both = c.config(9);
  both.file = cfg.file;
  both.syslog_addr = cfg.syslog_addr;
  both.syslog_port = cfg.syslog_port;
  log.configure(both);
  p.ctx.sessions[0]->set_event_ring(p.ctx.events[0]);
  ASSERT_TRUE(opens("203.0.113.10", 40000));
  EXPECT_FALSE(opens("203.0.113.10", 40001)) << "a second port";
  EXPECT_FALSE(opens("203.0.113.10", 40002)) << "within the second: dropped, not logged";
  p.advance(1000);
  ASSERT_TRUE(opens("203.0.113.11", 40000)) << "the host's one mapping, toward others";
  ASSERT_TRUE(opens("203.0.113.12", 40000));
  EXPECT_FALSE(opens("203.0.113.13", 40000)) << "a fourth session";
  EXPECT_EQ(drain(), 5u) << "3 creates, 2 quota events";
  const auto quota = file_lines_with(" quota-exceeded ");
  ASSERT_EQ(quota.size(), 2u);
  EXPECT_EQ(quota[0], "2025-12-02T18:00:01.000Z quota-exceeded limit=max_ports_per_host:1 proto=udp "
                      "inside=192.168.10.2:40001 remote=203.0.113.10:53");
  EXPECT_EQ(quota[1], "2025-12-02T18:00:02.000Z quota-exceeded limit=max_sessions_per_host:3 proto=udp "
                      "inside=192.168.10.2:40000 remote=203.0.113.13:53");
  const auto d = datagrams();
  ASSERT_EQ(d.size(), 5u);
  EXPECT_NE(d[1].find(" NAT44 - quota-exceeded limit=max_ports_per_host:1 proto=udp inside=192.168.10.2:40001"),
            std::string::npos)
      << d[1];
  EXPECT_EQ(log.logged(nat::NatEventKind::kQuotaSessions), 2u);
  EXPECT_EQ(log.logged(nat::NatEventKind::kCreate), 3u);
  EXPECT_EQ(log.summary(7),
            "nat events: session-create 3, session-delete 0, quota-exceeded 2, ports-exhausted 0; lost 7, write "
            "errors 0\n")
      << "natgwctl stats' line";
  log.configure(config::NatEvents{});
  EXPECT_EQ(log.summary(7), "") << "no line while logging is off";
  EXPECT_NE(log.prometheus().find("natgw_nat_events_total{kind=\"quota-exceeded\"} 2\n"), std::string::npos);
  const auto m = c.messages();
  ASSERT_EQ(m.size(), 1u);
  ASSERT_EQ(m[0].records.size(), 5u);
  ASSERT_EQ(c.templates.count(257), 1u) << "the quota template came with its records";
  std::vector<std::map<uint16_t, uint64_t>> q;
  for (const auto& r : m[0].records)
    if (r.count(466)) q.push_back(r);
  ASSERT_EQ(q.size(), 2u);
  EXPECT_EQ(q[0].at(230), 13u) << "natEvent: quota exceeded";
  EXPECT_EQ(q[0].at(466), 3u) << "maximum entries per user";
  EXPECT_EQ(q[0].at(473), 1u) << "the port limit";
  EXPECT_EQ(q[1].at(473), 3u) << "the session limit";
  EXPECT_EQ(q[0].at(8), 0xc0a80a02u) << "the host";
  EXPECT_EQ(q[0].at(323), uint64_t(kBase + 1000));
  EXPECT_EQ(q[1].at(323), uint64_t(kBase + 2000));
  EXPECT_EQ(m[0].sequence, 0u);
}

// An outside address with no port left for a protocol: a ports-exhausted line and RFC 8158 record, at
// most one a second per address and protocol; every refused flow is still a no_port drop.
class NatEventsExhausted : public NatEvents {
 protected:
  NatEventsExhausted()
      : NatEvents(with(kLabConfig, "from = [\"192.168.0.0/16\"]", "from = [\"192.168.0.0/16\"]\nports = \"1024-1025\"") +
                  "[nat]\nport_overlapping = false\n") {}
  bool opens(uint8_t proto, uint16_t sport) {
    p.rx(kInside, build_frame(client(proto, "203.0.113.10", sport, 53)));
    return ipv4_only(p.out(kInternet)).size() == 1;
  }
};

TEST_F(NatEventsExhausted, NoPortLeftIsLoggedOnceASecondPerAddressAndProtocol) {
  Collector c;
  auto both = c.config();
  both.file = cfg.file;
  log.configure(both);
  p.ctx.sessions[0]->set_event_ring(p.ctx.events[0]);
  ASSERT_TRUE(opens(IPPROTO_UDP, 40000));
  ASSERT_TRUE(opens(IPPROTO_UDP, 40001));
  EXPECT_FALSE(opens(IPPROTO_UDP, 40002));
  EXPECT_FALSE(opens(IPPROTO_UDP, 40003)) << "within the second: not logged again";
  ASSERT_TRUE(opens(IPPROTO_TCP, 40002)) << "TCP has ports of its own";
  p.advance(1000);
  EXPECT_FALSE(opens(IPPROTO_UDP, 40004));
  EXPECT_EQ(drops(p, dp::kDropNoPort), 3u);
  EXPECT_EQ(drain(), 5u) << "3 creates, 2 ports-exhausted events";
  const auto x = file_lines_with(" ports-exhausted ");
  ASSERT_EQ(x.size(), 2u);
  EXPECT_EQ(x[0], "2025-12-02T18:00:01.000Z ports-exhausted outside=10.0.3.10 proto=udp inside=192.168.10.2:40002 "
                  "remote=203.0.113.10:53");
  EXPECT_EQ(x[1], "2025-12-02T18:00:02.000Z ports-exhausted outside=10.0.3.10 proto=udp inside=192.168.10.2:40004 "
                  "remote=203.0.113.10:53");
  EXPECT_EQ(log.logged(nat::NatEventKind::kPortsExhausted), 2u);
  EXPECT_NE(log.summary(0).find(", ports-exhausted 2;"), std::string::npos) << log.summary(0);
  EXPECT_NE(log.prometheus().find("natgw_nat_events_total{kind=\"ports-exhausted\"} 2\n"), std::string::npos);
  const auto m = c.messages();
  ASSERT_EQ(m.size(), 1u);
  std::vector<std::map<uint16_t, uint64_t>> r;
  for (const auto& rec : m[0].records)
    if (rec.at(230) == 12) r.push_back(rec);
  ASSERT_EQ(r.size(), 2u);
  EXPECT_EQ(r[0].at(225), 0x0a00030au) << "the address";
  EXPECT_EQ(r[0].at(4), uint64_t{IPPROTO_UDP});
  EXPECT_EQ(r[1].at(323), uint64_t(kBase + 2000));
}

// A session's end as the stop path logs it (EventLog::log, not through a ring): created at the
// workers' 1,000 ms, last packet at 2,000.
nat::NatEvent a_delete(uint16_t inside_port) {
  nat::NatEvent e{};
  e.kind = nat::NatEventKind::kDelete;
  e.proto = IPPROTO_UDP;
  e.start_ms = 1'000;
  e.end_ms = 2'000;
  e.in_ip = htonl(0xc0a80a02);  // 192.168.10.2
  e.in_port = htons(inside_port);
  e.out_ip = htonl(0x0a00030a);  // 10.0.3.10
  e.out_port = htons(1024);
  e.remote_ip = htonl(0xcb00710a);  // 203.0.113.10
  e.remote_port = htons(53);
  return e;
}

// A reload that leaves [nat_events] ipfix as it was keeps the transport session: the same socket,
// the sequence going on, no template before it is due. Another port of the same collector address is
// another collector: the same socket (natgw keeps one while IPFIX is on), a sequence from 0, the
// template first, and nothing more to the old one.
TEST_F(NatEvents, AReloadKeepsTheIpfixSessionUnlessTheCollectorChanges) {
  Collector a, b;
  const std::set<int> before = udp_sockets();
  log.configure(a.config(5));
  const std::set<int> opened = udp_sockets();
  ASSERT_EQ(opened.size(), before.size() + 1);
  log.log(a_delete(40000), kBase + 3'000, 3'000);
  EXPECT_EQ(log.drain(p.ctx.events, kBase + 3'000, 3'000), 0u);
  auto m = a.messages();
  ASSERT_EQ(m.size(), 1u);
  EXPECT_TRUE(m[0].had_template);
  EXPECT_EQ(m[0].sequence, 0u);

  log.configure(a.config(5));  // the same config again
  EXPECT_EQ(udp_sockets(), opened) << "the same socket";
  log.log(a_delete(40001), kBase + 4'000, 4'000);
  log.drain(p.ctx.events, kBase + 4'000, 4'000);
  m = a.messages();
  ASSERT_EQ(m.size(), 1u);
  EXPECT_FALSE(m[0].had_template) << "sent 1 s ago to this collector";
  EXPECT_EQ(m[0].sequence, 1u) << "the sequence goes on";
  EXPECT_EQ(m[0].domain, 5u);

  log.configure(b.config(5));  // only the port differs
  EXPECT_EQ(udp_sockets(), opened) << "still the same socket";
  log.log(a_delete(40002), kBase + 5'000, 5'000);
  log.drain(p.ctx.events, kBase + 5'000, 5'000);
  EXPECT_TRUE(a.messages().empty());
  m = b.messages();
  ASSERT_EQ(m.size(), 1u);
  EXPECT_TRUE(m[0].had_template) << "a new collector: the template first";
  EXPECT_EQ(m[0].sequence, 0u) << "a new transport session";
  ASSERT_EQ(m[0].records.size(), 1u);
  EXPECT_EQ(m[0].records[0].at(7), 40002u);
  EXPECT_EQ(log.write_errors(), 0u);
}

// Records not sent yet when a reload switches collectors go to the old one, before the switch.
TEST_F(NatEvents, AReloadSendsWhatIsPendingToTheOldCollector) {
  Collector a, b;
  log.configure(a.config());
  log.log(a_delete(40000), kBase + 3'000, 3'000);  // pending: a message is sent when full or at a drain's end
  EXPECT_TRUE(a.messages().empty());
  log.configure(b.config());
  auto m = a.messages();
  ASSERT_EQ(m.size(), 1u);
  ASSERT_EQ(m[0].records.size(), 1u);
  EXPECT_EQ(m[0].records[0].at(7), 40000u);
  EXPECT_TRUE(b.messages().empty());
  log.log(a_delete(40001), kBase + 4'000, 4'000);
  log.drain(p.ctx.events, kBase + 4'000, 4'000);
  m = b.messages();
  ASSERT_EQ(m.size(), 1u);
  EXPECT_EQ(m[0].records.size(), 1u);
  EXPECT_TRUE(a.messages().empty());
}

// A message's export time is when it is sent: a drain that finds the rings empty still sends what
// log() left pending, stamped with the drain's clock, not the clock log() was given.
TEST_F(NatEvents, AnIpfixMessageCarriesTheTimeItIsSent) {
  Collector a;
  log.configure(a.config());
  log.log(a_delete(40000), kBase + 3'000, 3'000);
  EXPECT_EQ(log.drain(p.ctx.events, kBase + 9'000, 9'000), 0u);
  const auto m = a.messages();
  ASSERT_EQ(m.size(), 1u);
  EXPECT_EQ(m[0].export_time, (kBase + 9'000) / 1000);
  ASSERT_EQ(m[0].records.size(), 1u);
  EXPECT_EQ(m[0].records[0].at(323), static_cast<uint64_t>(kBase + 3'000)) << "the delete: when log() had it";
  EXPECT_EQ(m[0].records[0].at(153), static_cast<uint64_t>(kBase + 2'000)) << "its last packet";
}

// An EventLog that goes (natgw stopping) sends what it still holds.
TEST_F(NatEvents, WhatIsPendingIsSentWhenTheLogGoes) {
  Collector a;
  {
    control::EventLog gone;
    gone.configure(a.config());
    gone.log(a_delete(40000), kBase + 3'000, 3'000);
    EXPECT_TRUE(a.messages().empty());
  }
  const auto m = a.messages();
  ASSERT_EQ(m.size(), 1u);
  ASSERT_EQ(m[0].records.size(), 1u);
  EXPECT_EQ(m[0].records[0].at(7), 40000u);
}

// The IPFIX socket has a larger send buffer than the default, for bursts of deletes (1 MiB asked,
// which the kernel doubles; without CAP_NET_ADMIN up to net.core.wmem_max).
TEST_F(NatEvents, TheIpfixSocketHasRoomForBursts) {
  const int fresh = ::socket(AF_INET, SOCK_DGRAM, 0);
  int fresh_size = 0;
  socklen_t len = sizeof fresh_size;
  ASSERT_EQ(::getsockopt(fresh, SOL_SOCKET, SO_SNDBUF, &fresh_size, &len), 0);
  const int force = 1 << 20;
  const bool privileged = ::setsockopt(fresh, SOL_SOCKET, SO_SNDBUFFORCE, &force, sizeof force) == 0;
  ::close(fresh);
  int wmem_max = 0;
  std::ifstream("/proc/sys/net/core/wmem_max") >> wmem_max;
  if (!privileged && 2 * wmem_max <= fresh_size)
    GTEST_SKIP() << "net.core.wmem_max allows no more than the default";
  Collector a;
  const std::set<int> before = udp_sockets();
  log.configure(a.config());
  std::vector<int> opened;
  for (int fd : udp_sockets())
    if (!before.count(fd)) opened.push_back(fd);
  ASSERT_EQ(opened.size(), 1u);
  int size = 0;
  len = sizeof size;
  ASSERT_EQ(::getsockopt(opened[0], SOL_SOCKET, SO_SNDBUF, &size, &len), 0);
  EXPECT_GT(size, fresh_size);
  if (privileged) {
    EXPECT_EQ(size, 2 << 20);
  }
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
