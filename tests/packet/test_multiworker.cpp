// Two workers sharing the session tables: a session's two directions on different
// workers, new flows handed to their owner, endpoint-independent mapping across
// queues, and sessions created concurrently from two threads.
#include <gtest/gtest.h>

#include <atomic>
#include <set>
#include <thread>

#include "packet/packet_test.hpp"

namespace natgw::test {
namespace {

class TwoWorkers : public ::testing::Test {
 protected:
  explicit TwoWorkers(const std::string& cfg = kLabConfig) : p(cfg, 2) { lab_neighbours(p); }
  std::string host_owned_by(uint16_t w, int skip = 0) {
    for (int i = 2; i < 250; ++i) {
      const std::string h = "192.168.10." + std::to_string(i);
      if (p.ctx.flow_owner(ip(h.c_str())) == w && skip-- == 0) return h;
    }
    ADD_FAILURE() << "no host for worker " << w;
    return "192.168.10.2";
  }
  Pipeline p;
};

TEST_F(TwoWorkers, TheTwoDirectionsOfASessionOnDifferentWorkers) {
  for (uint16_t owner : {0, 1}) {
    const std::string h = host_owned_by(owner);
    const uint16_t other = static_cast<uint16_t>(1 - owner);
    // Out through the owner, back through the other worker, and the other way round.
    const auto s = client(IPPROTO_TCP, "203.0.113.10", 40000, 443, h.c_str());
    const auto syn = build_frame(s);
    p.rx(kInside, syn, owner);
    auto out = ipv4_only(p.out(kInternet));
    ASSERT_EQ(out.size(), 1u);
    const Parsed o = parse_frame(out[0]);
    EXPECT_EQ(out[0], expected(syn, {.src = ip("10.0.3.10"), .sport = o.sport, .src_mac = our_mac(kInternet),
                                     .dst_mac = mac(kInternetGwMac)}));
    for (uint16_t w : {other, owner}) {
      const auto r = build_frame(reply_to(o, kInternet));
      p.rx(kInternet, r, w);
      auto back = ipv4_only(p.out(kInside));
      ASSERT_EQ(back.size(), 1u) << "reply on worker " << w;
      EXPECT_EQ(back[0], expected(r, {.dst = ip(h.c_str()), .dport = 40000, .src_mac = our_mac(kInside),
                                      .dst_mac = mac(kTgwMac)}));
    }
    auto ack = s;
    ack.tcp_flags = RTE_TCP_ACK_FLAG;
    p.rx(kInside, build_frame(ack), other);  // an established flow is translated where it lands
    EXPECT_EQ(ipv4_only(p.out(kInternet)).size(), 1u);
    EXPECT_EQ(p.ctx.sessions[owner]->active(), 1u) << "the owner's table holds it";
    EXPECT_EQ(p.ctx.sessions[other]->active(), owner == 0 ? 0u : 1u);
  }
  EXPECT_EQ(all_drops(p), 0u);
}

TEST_F(TwoWorkers, NewFlowsAreHandedToTheirOwner) {
  const std::string h = host_owned_by(1);
  p.rx(kInside, build_frame(client(IPPROTO_UDP, "203.0.113.10", 40000, 53, h.c_str())), 0);
  EXPECT_EQ(ipv4_only(p.out(kInternet)).size(), 1u);
  EXPECT_EQ(p.worker(0).counters().handed_off.get(), 1u);
  EXPECT_EQ(p.ctx.sessions[0]->active(), 0u);
  EXPECT_EQ(p.ctx.sessions[1]->active(), 1u);
}

class TwoWorkersRandomPorts : public TwoWorkers {
 protected:
  TwoWorkersRandomPorts() : TwoWorkers(std::string(kLabConfig) + "[nat]\nport_preservation = false\n") {}
};

TEST_F(TwoWorkersRandomPorts, MappingIsEndpointIndependentWhicheverWorkerAFlowLandsOn) {
  for (uint16_t owner : {0, 1}) {
    const std::string h = host_owned_by(owner);
    std::set<std::pair<uint32_t, uint16_t>> mapped;
    const char* dsts[] = {"203.0.113.10", "203.0.113.11", "203.0.113.12", "203.0.113.13"};
    for (uint16_t i = 0; i < 4; ++i) {
      p.rx(kInside, build_frame(client(IPPROTO_UDP, dsts[i], 40000, 53, h.c_str())), i % 2);
      auto out = ipv4_only(p.out(kInternet));
      ASSERT_EQ(out.size(), 1u);
      mapped.emplace(parse_frame(out[0]).src, parse_frame(out[0]).sport);
    }
    EXPECT_EQ(mapped.size(), 1u) << h;
  }
}

// Both workers create sessions at the same time, each for its own hosts and for
// the other's (handed over), while draining what the other hands to it.
TEST_F(TwoWorkers, ConcurrentCreationOnBothWorkers) {
  constexpr int kHosts = 40, kPorts = 25;  // 1000 flows per worker
  std::vector<std::vector<uint8_t>> frames[2];
  for (int w = 0; w < 2; ++w)
    for (int h = 0; h < kHosts; ++h)
      for (int port = 0; port < kPorts; ++port) {
        const std::string src = "192.168." + std::to_string(20 + w) + "." + std::to_string(h + 1);
        frames[w].push_back(build_frame(
            client(IPPROTO_UDP, "203.0.113.10", static_cast<uint16_t>(30000 + port), 53, src.c_str())));
      }
  std::atomic<int> done{0};
  auto run = [&](uint16_t w) {
    dp::Worker& wk = p.worker(w);
    for (size_t i = 0; i < frames[w].size(); i += 16) {
      rte_mbuf* ms[16];
      uint16_t n = 0;
      for (size_t j = i; j < std::min(i + 16, frames[w].size()); ++j) ms[n++] = to_mbuf(p.pool, frames[w][j]);
      wk.process(kInside, ms, n);
      wk.drain_handoff();
      wk.flush();
    }
    done.fetch_add(1);
    while (done.load() < 2) wk.drain_handoff();
    while (wk.drain_handoff()) {
    }
    wk.flush();
  };
  std::thread t0(run, 0), t1(run, 1);
  t0.join();
  t1.join();

  auto out = ipv4_only(p.out(kInternet));
  ASSERT_EQ(out.size(), 2u * kHosts * kPorts);
  EXPECT_EQ(active_sessions(p), 2u * kHosts * kPorts);
  EXPECT_EQ(all_drops(p), 0u);
  std::set<uint16_t> ports;
  for (const auto& f : out) {
    const Parsed o = parse_frame(f);
    EXPECT_EQ(ipstr(o.src), "10.0.3.10");
    ports.insert(o.sport);
  }
  // All flows go to one destination ip:port: every outside port must differ.
  EXPECT_EQ(ports.size(), out.size());
  // Every reply, on either worker, reaches its own inside endpoint.
  std::set<std::pair<uint32_t, uint16_t>> inside;
  for (size_t i = 0; i < out.size(); ++i) {
    p.rx(kInternet, build_frame(reply_to(parse_frame(out[i]), kInternet)), static_cast<uint16_t>(i % 2));
    auto back = ipv4_only(p.out(kInside));
    ASSERT_EQ(back.size(), 1u);
    const Parsed b = parse_frame(back[0]);
    inside.emplace(b.dst, b.dport);
  }
  EXPECT_EQ(inside.size(), out.size());
}

}  // namespace
}  // namespace natgw::test
