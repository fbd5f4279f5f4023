// Unit tests of the XDP steering program (natgw_steer.bpf.o) and its C++ API (lib/xdp/steering.hpp).
//
// The program's verdicts are checked with BPF_PROG_TEST_RUN on hand-made frames; attach/open/pin/detach on
// a veth pair in a private network namespace (and a private bpffs for the pins), so the test leaves
// nothing behind on the machine. Needs root (CAP_BPF, CAP_NET_ADMIN, CAP_SYS_ADMIN): exits 77 (meson's
// "skipped") with the reason otherwise, or when the kernel lacks BPF_PROG_TEST_RUN for XDP.
// NATGW_XDP_OBJECT names the object under test (set by tests/xdp/meson.build).
#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <gtest/gtest.h>
#include <linux/bpf.h>
#include <linux/if_link.h>
#include <net/if.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "xdp/steering.hpp"

namespace {

using natgw::xdp::SteeringConfig;
using natgw::xdp::XdpSteering;

std::string g_object;
std::string g_bpffs;  // private bpffs mount for pin tests

uint32_t ip(const char* s) {  // host order, like natgw's config
  in_addr a{};
  inet_pton(AF_INET, s, &a);
  return ntohl(a.s_addr);
}

// ---------------------------------------------------------------------------------------------- frames
struct FrameSpec {
  uint8_t dst_mac0 = 0x02;  // 0x01 bit = multicast/broadcast MAC
  uint16_t ethertype = 0x0800;
  const char* src = "192.168.10.2";
  const char* dst = "10.0.0.10";
  uint8_t proto = IPPROTO_TCP;
  uint16_t sport = 40000, dport = 22;
  uint16_t frag_off = 0;  // host order, as in the header (flags + offset)
};

void put16(std::vector<uint8_t>& f, size_t at, uint16_t v) {
  f[at] = static_cast<uint8_t>(v >> 8);
  f[at + 1] = static_cast<uint8_t>(v);
}
void put32be(std::vector<uint8_t>& f, size_t at, uint32_t host) {
  for (int i = 0; i < 4; ++i) f[at + i] = static_cast<uint8_t>(host >> (24 - 8 * i));
}

std::vector<uint8_t> ipv4_frame(const FrameSpec& s) {
  std::vector<uint8_t> f(14 + 20 + 20 + 16, 0);
  f[0] = s.dst_mac0;
  f[5] = 0x10;
  f[6] = 0x02;
  f[11] = 0x01;
  put16(f, 12, s.ethertype);
  f[14] = 0x45;
  put16(f, 16, static_cast<uint16_t>(f.size() - 14));
  put16(f, 20, s.frag_off);
  f[22] = 64;
  f[23] = s.proto;
  put32be(f, 26, ip(s.src));
  put32be(f, 30, ip(s.dst));
  put16(f, 34, s.sport);
  put16(f, 36, s.dport);
  return f;
}

std::vector<uint8_t> arp_frame(const char* target, uint16_t oper = 1) {
  std::vector<uint8_t> f(14 + 28 + 18, 0);
  for (int i = 0; i < 6; ++i) f[i] = 0xff;
  f[6] = 0x02;
  f[11] = 0x02;
  put16(f, 12, 0x0806);
  put16(f, 14, 1);       // htype Ethernet
  put16(f, 16, 0x0800);  // ptype IPv4
  f[18] = 6;
  f[19] = 4;
  put16(f, 20, oper);
  put32be(f, 28, ip("10.0.0.1"));  // spa
  put32be(f, 38, ip(target));      // tpa
  return f;
}

// ---------------------------------------------------------------------------------------------- fixture
class Verdicts : public ::testing::Test {
 protected:
  void SetUp() override { s_ = std::make_unique<XdpSteering>(XdpSteering::load(g_object)); }

  // Run `frame` and return which counter moved (exactly one must).
  std::string judge(const std::vector<uint8_t>& frame, uint32_t* action = nullptr) {
    const auto before = s_->stats();
    const uint32_t a = s_->test_run(frame.data(), static_cast<uint32_t>(frame.size()));
    if (action) *action = a;
    const auto after = s_->stats();
    std::string moved;
    for (unsigned i = 0; i < NATGW_STEER_NCOUNTERS; ++i) {
      if (after.packets[i] == before.packets[i]) continue;
      EXPECT_EQ(after.packets[i], before.packets[i] + 1) << natgw::xdp::counter_name(i);
      EXPECT_EQ(after.bytes[i], before.bytes[i] + frame.size()) << natgw::xdp::counter_name(i);
      if (!moved.empty()) moved += "+";
      moved += natgw::xdp::counter_name(i);
    }
    return moved;
  }

  void configure(bool transit = true, bool dhcp = true) {
    SteeringConfig c;
    c.host_addresses = {ip("10.0.0.10"), ip("10.0.0.11")};
    c.natgw_addresses = {ip("10.0.0.20"), ip("10.0.0.21")};
    c.transit = transit;
    c.dhcp = dhcp;
    s_->configure(c);
  }

  std::unique_ptr<XdpSteering> s_;
};

TEST_F(Verdicts, DisabledUntilConfiguredEverythingGoesToTheKernel) {
  uint32_t action = 0;
  EXPECT_EQ(judge(ipv4_frame({.dst = "8.8.8.8"}), &action), "pass_disabled");
  EXPECT_EQ(action, static_cast<uint32_t>(XDP_PASS));
  EXPECT_EQ(judge(arp_frame("10.0.0.20")), "pass_disabled");
  EXPECT_FALSE(s_->current().enabled);
}

TEST_F(Verdicts, HostAddressesGoToTheKernelWhateverThePort) {
  configure();
  uint32_t action = 0;
  EXPECT_EQ(judge(ipv4_frame({.dst = "10.0.0.10", .dport = 22}), &action), "pass_host");
  EXPECT_EQ(action, static_cast<uint32_t>(XDP_PASS));
  // A reply to a connection the host made (metadata, SSM, DNS): an ephemeral port, still the kernel's.
  EXPECT_EQ(judge(ipv4_frame({.src = "169.254.169.254", .dst = "10.0.0.11", .sport = 80, .dport = 51234})),
            "pass_host");
  EXPECT_EQ(judge(ipv4_frame({.dst = "10.0.0.10", .proto = IPPROTO_UDP, .sport = 53, .dport = 40001})),
            "pass_host");
  EXPECT_EQ(judge(arp_frame("10.0.0.10")), "pass_host_arp");
  EXPECT_EQ(judge(arp_frame("10.0.0.99")), "pass_host_arp");  // nobody's: the kernel ignores it
  EXPECT_EQ(judge(arp_frame("10.0.0.11", 2)), "pass_host_arp");
}

TEST_F(Verdicts, NatgwAddressesAndTransitAreForNatgwAndFallBackWithoutSocket) {
  configure();
  // No AF_XDP socket is bound in a test run: bpf_redirect_map returns its XDP_PASS fallback, which is
  // exactly what happens on a live interface when natgw is down.
  uint32_t action = 0;
  EXPECT_EQ(judge(ipv4_frame({.dst = "10.0.0.20", .proto = IPPROTO_UDP, .dport = 1024}), &action), "fallback");
  EXPECT_EQ(action, static_cast<uint32_t>(XDP_PASS));
  EXPECT_EQ(judge(ipv4_frame({.dst = "10.0.0.21", .dport = 22})), "fallback");  // port 22, not the host's
  EXPECT_EQ(judge(ipv4_frame({.dst = "52.216.0.1", .dport = 443})), "fallback");
  EXPECT_EQ(judge(arp_frame("10.0.0.20")), "fallback");
  EXPECT_EQ(s_->stats().to_natgw_packets(), 0u);
}

TEST_F(Verdicts, DhcpBroadcastNonIpv4AndMalformed) {
  configure();
  EXPECT_EQ(judge(ipv4_frame({.src = "10.0.0.1", .dst = "10.0.0.99", .proto = IPPROTO_UDP, .sport = 67, .dport = 68})),
            "pass_dhcp");
  EXPECT_EQ(judge(ipv4_frame({.dst_mac0 = 0xff, .src = "10.0.0.1", .dst = "255.255.255.255",
                              .proto = IPPROTO_UDP, .sport = 67, .dport = 68})),
            "pass_dhcp");
  // A later fragment has no UDP header: 67/68 at that offset are payload, so it is transit.
  EXPECT_EQ(judge(ipv4_frame({.dst = "10.0.0.99", .proto = IPPROTO_UDP, .sport = 67, .dport = 68, .frag_off = 185})),
            "fallback");
  EXPECT_EQ(judge(ipv4_frame({.dst_mac0 = 0xff, .dst = "255.255.255.255", .proto = IPPROTO_UDP})), "pass_broadcast");
  EXPECT_EQ(judge(ipv4_frame({.dst_mac0 = 0x01, .dst = "224.0.0.251", .proto = IPPROTO_UDP})), "pass_broadcast");
  EXPECT_EQ(judge(ipv4_frame({.dst_mac0 = 0xff, .dst = "10.0.0.255", .proto = IPPROTO_UDP})), "pass_broadcast");
  EXPECT_EQ(judge(ipv4_frame({.ethertype = 0x86dd})), "pass_non_ipv4");
  EXPECT_EQ(judge(ipv4_frame({.ethertype = 0x88cc})), "pass_non_ipv4");  // LLDP
  auto shortip = ipv4_frame({});
  shortip.resize(14 + 12);
  EXPECT_EQ(judge(shortip), "pass_malformed");
  auto badihl = ipv4_frame({});
  badihl[14] = 0x44;
  EXPECT_EQ(judge(badihl), "pass_malformed");
  auto shortarp = arp_frame("10.0.0.20");
  shortarp.resize(14 + 20);
  EXPECT_EQ(judge(shortarp), "pass_malformed");
}

TEST_F(Verdicts, FlagsTurnTransitAndDhcpOff) {
  configure(/*transit=*/false, /*dhcp=*/false);
  EXPECT_EQ(judge(ipv4_frame({.dst = "52.216.0.1"})), "pass_other");
  EXPECT_EQ(judge(ipv4_frame({.dst = "10.0.0.20"})), "fallback");  // natgw's own address still is natgw's
  EXPECT_EQ(judge(ipv4_frame({.dst = "10.0.0.99", .proto = IPPROTO_UDP, .sport = 67, .dport = 68})), "pass_other");
  SteeringConfig c = s_->current();
  c.enabled = false;
  s_->configure(c);
  EXPECT_EQ(judge(ipv4_frame({.dst = "10.0.0.20"})), "pass_disabled");
}

TEST_F(Verdicts, ConfigurationRoundTripsAndReplacesSets) {
  configure();
  SteeringConfig c = s_->current();
  EXPECT_TRUE(c.enabled && c.transit && c.dhcp);
  EXPECT_EQ(c.host_addresses, (std::vector<uint32_t>{ip("10.0.0.10"), ip("10.0.0.11")}));
  EXPECT_EQ(c.natgw_addresses, (std::vector<uint32_t>{ip("10.0.0.20"), ip("10.0.0.21")}));
  // Move 10.0.0.11 from the host to natgw and 10.0.0.20 from natgw to the host in one configure().
  c.host_addresses = {ip("10.0.0.10"), ip("10.0.0.20")};
  c.natgw_addresses = {ip("10.0.0.11"), ip("10.0.0.21")};
  s_->configure(c);
  EXPECT_EQ(s_->current().host_addresses, (std::vector<uint32_t>{ip("10.0.0.10"), ip("10.0.0.20")}));
  EXPECT_EQ(s_->current().natgw_addresses, (std::vector<uint32_t>{ip("10.0.0.11"), ip("10.0.0.21")}));
  EXPECT_EQ(judge(ipv4_frame({.dst = "10.0.0.20"})), "pass_host");
  EXPECT_EQ(judge(ipv4_frame({.dst = "10.0.0.11"})), "fallback");
  s_->set_host_addresses({ip("10.0.0.10")});
  EXPECT_EQ(s_->current().host_addresses, (std::vector<uint32_t>{ip("10.0.0.10")}));
  EXPECT_EQ(judge(ipv4_frame({.dst = "10.0.0.20"})), "fallback");  // now transit
  s_->reset_stats();
  EXPECT_EQ(s_->stats().to_kernel_packets() + s_->stats().to_natgw_packets(), 0u);
}

TEST_F(Verdicts, AnAddressCannotBeBothTheHostsAndNatgws) {
  configure();
  SteeringConfig c = s_->current();
  c.natgw_addresses.push_back(ip("10.0.0.10"));
  try {
    s_->configure(c);
    FAIL() << "expected an error";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("10.0.0.10 is both"), std::string::npos) << e.what();
  }
  EXPECT_THROW(s_->set_natgw_addresses({ip("10.0.0.11")}), std::runtime_error);
  EXPECT_THROW(s_->set_host_addresses({ip("10.0.0.21")}), std::runtime_error);
  std::vector<uint32_t> many;
  for (uint32_t i = 0; i < NATGW_STEER_MAX_HOST_ADDRS + 1; ++i) many.push_back(ip("10.1.0.0") + i);
  EXPECT_THROW(s_->set_host_addresses(many), std::runtime_error);
  EXPECT_EQ(s_->current().host_addresses.size(), 2u);  // unchanged by the rejected calls
}

TEST(Counters, NamesAndDestinationsAreStable) {
  EXPECT_EQ(natgw::xdp::counter_name(NATGW_STEER_C_PASS_HOST), "pass_host");
  EXPECT_EQ(natgw::xdp::counter_name(NATGW_STEER_C_XSK_TRANSIT), "xsk_transit");
  EXPECT_EQ(natgw::xdp::counter_name(NATGW_STEER_C_FALLBACK), "fallback");
  EXPECT_EQ(natgw::xdp::counter_destination(NATGW_STEER_C_XSK_NATGW_ARP), "natgw");
  EXPECT_EQ(natgw::xdp::counter_destination(NATGW_STEER_C_FALLBACK), "kernel");
  EXPECT_EQ(natgw::xdp::counter_name(NATGW_STEER_NCOUNTERS), "unknown");
}

TEST(DeviceStrings, IfaceAndXdpProg) {
  EXPECT_EQ(natgw::xdp::af_xdp_iface("net_af_xdp0,iface=ens5,queue_count=2"), "ens5");
  EXPECT_EQ(natgw::xdp::af_xdp_iface("net_af_xdp1,start_queue=0,iface=eth1"), "eth1");
  EXPECT_EQ(natgw::xdp::af_xdp_iface("net_af_packet0,iface=eth1"), "");
  EXPECT_EQ(natgw::xdp::af_xdp_iface("0000:00:06.0"), "");
  EXPECT_EQ(natgw::xdp::with_xdp_prog("net_af_xdp0,iface=ens5", "/o.o"), "net_af_xdp0,iface=ens5,xdp_prog=/o.o");
  EXPECT_EQ(natgw::xdp::with_xdp_prog("net_af_xdp0,iface=ens5,xdp_prog=/x.o", "/o.o"),
            "net_af_xdp0,iface=ens5,xdp_prog=/x.o");
}

// ---------------------------------------------------------------------------------------------- attach
int sh(const std::string& cmd) { return std::system((cmd + " >/dev/null 2>&1").c_str()); }

class OnInterface : public ::testing::Test {
 protected:
  void SetUp() override {
    sh("ip link del xd-u0");
    if (sh("ip link add xd-u0 type veth peer name xd-u1") != 0) GTEST_SKIP() << "cannot create a veth pair";
    sh("ip link set xd-u0 up");
    sh("ip link set xd-u1 up");
    sh("ip addr add 10.0.0.10/24 dev xd-u0");
    pins_ = g_bpffs + "/natgw/xd-u0";
  }
  void TearDown() override { sh("ip link del xd-u0"); }
  std::string pins_;
};

bool exists(const std::string& p) {
  struct stat st{};
  return stat(p.c_str(), &st) == 0;
}

TEST_F(OnInterface, AttachOpenPinConfigureDetach) {
  EXPECT_FALSE(XdpSteering::query("xd-u0").has_value());
  EXPECT_EQ(XdpSteering::kernel_addresses("xd-u0"), (std::vector<uint32_t>{ip("10.0.0.10")}));
  uint32_t id = 0;
  {
    XdpSteering a = XdpSteering::attach("xd-u0", g_object);
    id = a.prog_id();
  }  // closing our fds leaves it attached, as when the PMD attached it
  const auto q = XdpSteering::query("xd-u0");
  ASSERT_TRUE(q.has_value());
  EXPECT_EQ(q->name, "natgw_steer");
  EXPECT_EQ(q->prog_id, id);
  EXPECT_THROW(XdpSteering::attach("xd-u0", g_object), std::runtime_error);  // already attached

  XdpSteering s = XdpSteering::open("xd-u0", pins_);
  EXPECT_EQ(s.prog_id(), id);
  SteeringConfig c;
  c.host_addresses = XdpSteering::kernel_addresses("xd-u0");
  c.natgw_addresses = {ip("10.0.0.20")};
  s.configure(c);
  for (const char* m : {"xsks_map", "host_addrs", "natgw_addrs", "steer_config", "steer_stats"})
    EXPECT_TRUE(exists(pins_ + "/" + m)) << m;
  // Another process (natgwctl, bpftool) sees the same maps through the pins.
  const int fd = bpf_obj_get((pins_ + "/natgw_addrs").c_str());
  ASSERT_GE(fd, 0);
  const uint32_t key = htonl(ip("10.0.0.20"));
  uint32_t val = 0;
  EXPECT_EQ(bpf_map_lookup_elem(fd, &key, &val), 0);
  close(fd);
  // A second open() (natgw restarted its control side) sees the configuration.
  XdpSteering again = XdpSteering::open("xd-u0", pins_);
  EXPECT_EQ(again.current().natgw_addresses, c.natgw_addresses);

  s.detach();
  EXPECT_FALSE(XdpSteering::query("xd-u0").has_value());
  EXPECT_FALSE(exists(pins_ + "/natgw_addrs"));
  EXPECT_THROW(XdpSteering::open("xd-u0", ""), std::runtime_error);  // nothing attached
}

TEST_F(OnInterface, DetachStaleRemovesOnlyNatgwSteer) {
  { XdpSteering::attach("xd-u0", g_object, natgw::xdp::AttachMode::any, pins_); }
  EXPECT_TRUE(exists(pins_ + "/steer_stats"));
  EXPECT_TRUE(XdpSteering::detach_stale("xd-u0", pins_));
  EXPECT_FALSE(XdpSteering::query("xd-u0").has_value());
  EXPECT_FALSE(exists(pins_ + "/steer_stats"));
  EXPECT_FALSE(XdpSteering::detach_stale("xd-u0", pins_));  // nothing left: not an error

  // Someone else's program ("return XDP_PASS", named "other") is left alone and refused by open().
  const bpf_insn insns[] = {
      {BPF_ALU64 | BPF_MOV | BPF_K, 0, 0, 0, XDP_PASS},
      {BPF_JMP | BPF_EXIT, 0, 0, 0, 0},
  };
  const int other = bpf_prog_load(BPF_PROG_TYPE_XDP, "other", "GPL", insns, 2, nullptr);
  ASSERT_GE(other, 0);
  ASSERT_EQ(bpf_xdp_attach(static_cast<int>(if_nametoindex("xd-u0")), other, 0, nullptr), 0);
  EXPECT_FALSE(XdpSteering::detach_stale("xd-u0", pins_));
  ASSERT_TRUE(XdpSteering::query("xd-u0").has_value());
  EXPECT_EQ(XdpSteering::query("xd-u0")->name, "other");
  try {
    XdpSteering::open("xd-u0", "");
    FAIL() << "expected an error";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("not natgw_steer"), std::string::npos) << e.what();
  }
  bpf_xdp_detach(static_cast<int>(if_nametoindex("xd-u0")), 0, nullptr);
  close(other);
}

TEST(Errors, MissingInterfaceAndObjectAreExplained) {
  try {
    XdpSteering::open("xd-nonexistent", "");
    FAIL() << "expected an error";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("no interface 'xd-nonexistent'"), std::string::npos) << e.what();
  }
  EXPECT_THROW(XdpSteering::load("/nonexistent/natgw_steer.bpf.o"), std::runtime_error);
}

// ---------------------------------------------------------------------------------------------- main
int skip(const std::string& why) {
  std::printf("SKIP: %s\n", why.c_str());
  return 77;
}

}  // namespace

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  const char* obj = std::getenv("NATGW_XDP_OBJECT");
  g_object = obj ? obj : natgw::xdp::find_object();
  if (g_object.empty() || access(g_object.c_str(), R_OK) != 0)
    return skip("natgw_steer.bpf.o not built (clang or bpf headers missing?); NATGW_XDP_OBJECT=" + g_object);
  if (geteuid() != 0) return skip("needs root (BPF, network namespaces)");
  // Our own network and mount namespaces: the veth pair, the XDP attachments and the bpffs for pins all
  // go away with this process, whatever happens.
  if (unshare(CLONE_NEWNET | CLONE_NEWNS) != 0) return skip(std::string("unshare: ") + std::strerror(errno));
  if (mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0)
    return skip(std::string("make / private: ") + std::strerror(errno));
  char tmpl[] = "/tmp/xd-bpffs-XXXXXX";
  if (!mkdtemp(tmpl)) return skip("mkdtemp failed");
  g_bpffs = tmpl;
  if (mount("bpf", g_bpffs.c_str(), "bpf", 0, "mode=0700") != 0)
    return skip(std::string("mount bpffs: ") + std::strerror(errno));
  try {  // probe: can this kernel load the program and test-run XDP?
    auto s = XdpSteering::load(g_object);
    const std::vector<uint8_t> f(64, 0);
    s.test_run(f.data(), static_cast<uint32_t>(f.size()));
  } catch (const std::exception& e) {
    umount(g_bpffs.c_str());
    rmdir(g_bpffs.c_str());
    return skip(std::string("the kernel cannot load or test-run the XDP program: ") + e.what());
  }
  const int rc = RUN_ALL_TESTS();
  umount(g_bpffs.c_str());
  rmdir(g_bpffs.c_str());
  return rc;
}
