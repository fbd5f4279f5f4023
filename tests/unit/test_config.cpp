// Config loader: parsing, defaults, and every class of validation error with its line.
#include "config/config.hpp"

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <string>
#include <string_view>

namespace fs = std::filesystem;
using namespace natgw::config;

namespace {

// Joins lines with '\n' so a test's line numbers are its list positions (1-based).
std::string lines(std::initializer_list<std::string_view> ls) {
  std::string out;
  for (auto l : ls) out += std::string(l) + "\n";
  return out;
}

// A temporary folder removed at the end of the test.
class TempDir {
 public:
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "natgw-config-XXXXXX").string();
    if (!mkdtemp(tmpl.data())) throw std::runtime_error("mkdtemp failed");
    path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  const fs::path& path() const { return path_; }
  std::string write(const std::string& rel, const std::string& text) const {
    const fs::path p = path_ / rel;
    fs::create_directories(p.parent_path());
    std::ofstream(p) << text;
    return p.string();
  }

 private:
  fs::path path_;
};

LoadResult load(const std::string& text, const std::string& base_dir = ".") {
  return load_string(text, "t.toml", base_dir);
}

std::string dump(const LoadResult& r) {
  std::string out;
  for (const auto& e : r.errors) out += "\n  " + e.str();
  return out.empty() ? " (no errors)" : out;
}

// Passes when an error at file:line contains `phrase`.
::testing::AssertionResult HasError(const LoadResult& r, int line, std::string_view phrase,
                                    const std::string& file = "t.toml") {
  for (const auto& e : r.errors)
    if (e.file == file && e.line == line && e.message.find(phrase) != std::string::npos)
      return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "no error at " << file << ":" << line << " containing \""
                                       << phrase << "\"; errors:" << dump(r);
}

// One interface: the smallest valid config. Lines 1-4.
constexpr std::string_view kIf1 = "[[interface]]";
constexpr std::string_view kIf2 = "name = \"inside\"";
constexpr std::string_view kIf3 = "device = \"net_af_packet0,iface=nat-in\"";
constexpr std::string_view kIf4 = "address = \"10.0.1.10/24\"";

// Three interfaces (inside 10.0.1.10/24, endpoint 10.0.2.10/24, internet 10.0.3.10/24): lines 1-12.
std::string three_interfaces() {
  return lines({
      "[[interface]]",
      "name = \"inside\"",
      "device = \"net_af_packet0,iface=nat-in\"",
      "address = \"10.0.1.10/24\"",
      "[[interface]]",
      "name = \"endpoint\"",
      "device = \"net_af_packet1,iface=nat-s3\"",
      "address = \"10.0.2.10/24\"",
      "[[interface]]",
      "name = \"internet\"",
      "device = \"net_af_packet2,iface=nat-inet\"",
      "address = \"10.0.3.10/24\"",
  });
}

// ---------------------------------------------------------------- valid configs

TEST(ConfigLoad, FullConfigRoundTripsEveryField) {
  TempDir dir;
  dir.write("lists/s3.txt", lines({"# S3", "52.219.0.0/16", "", "3.5.0.0/19  # trailing comment"}));
  const std::string text = lines({
      "[dataplane]",                                                  // 1
      "workers = 2",                                                  // 2
      "eal = [\"-l\", \"0-2\", \"--huge-dir\", \"/dev/hugepages\"]",  // 3
      "mbufs = 65536",                                                // 4
      "[[interface]]",                                                // 5
      "name = \"inside\"",                                            // 6
      "device = \"0000:00:06.0\"",                                    // 7
      "address = \"10.0.1.10/24\"",                                   // 8
      "mtu = 8500",                                                   // 9
      "mss_clamp = 1360",                                             // 10
      "[[interface]]",                                                // 11
      "name = \"internet\"",                                          // 12
      "device = \"net_af_packet2,iface=nat-inet\"",                   // 13
      "address = \"10.0.3.10/28\"",                                   // 14
      "[[route]]",                                                    // 15
      "prefix = \"0.0.0.0/0\"",                                       // 16
      "via = \"10.0.3.1\"",                                           // 17
      "interface = \"internet\"",                                     // 18
      "[[route]]",                                                    // 19
      "prefix_list = \"lists/s3.txt\"",                               // 20
      "interface = \"inside\"",                                       // 21
      "[[snat]]",                                                     // 22
      "from = [\"192.168.0.0/16\", \"172.16.0.0/12\"]",               // 23
      "to = [\"10.0.3.11\", \"10.0.3.12\"]",                          // 24
      "ports = \"2000-3000\"",                                        // 25
      "[timeouts]",                                                   // 26
      "udp = 120",                                                    // 27
      "tcp_established = 350",                                        // 28
      "tcp_transitory = 30",                                          // 29
      "icmp = 10",                                                    // 30
      "fragment = 5",                                                 // 31
      "[nat]",                                                        // 32
      "port_preservation = false",                                    // 33
      "port_overlapping = false",                                     // 34
      "hairpinning = false",                                          // 35
      "max_sessions = 4096",                                          // 36
      "filtering = \"address-port-dependent\"",                       // 37
      "[[acl]]",                                                      // 38
      "action = \"deny\"",                                            // 39
      "src = \"10.0.0.0/8\"",                                         // 40
      "dst = \"169.254.169.254/32\"",                                 // 41
      "protocol = \"tcp\"",                                           // 42
      "src_ports = \"1024-65535\"",                                   // 43
      "dst_ports = \"80\"",                                           // 44
      "[[acl]]",                                                      // 45
      "action = \"allow\"",                                           // 46
      "protocol = 47",                                                // 47
      "[acl_default]",                                                // 48
      "action = \"deny\"",                                            // 49
      "[metrics]",                                                    // 50
      "listen = \"0.0.0.0:9100\"",                                    // 51
      "[control]",                                                    // 52
      "socket = \"/tmp/natgw.sock\"",                                 // 53
  });
  const auto r = load_string(text, "full.toml", dir.path().string());
  ASSERT_TRUE(r.ok()) << dump(r);
  const Config& c = *r.config;
  EXPECT_EQ(c.path, "full.toml");

  EXPECT_EQ(c.dataplane.workers, 2u);
  EXPECT_EQ(c.dataplane.eal, (std::vector<std::string>{"-l", "0-2", "--huge-dir", "/dev/hugepages"}));
  EXPECT_EQ(c.dataplane.mbufs, 65536u);

  ASSERT_EQ(c.interfaces.size(), 2u);
  const Interface& in = c.interfaces[0];
  EXPECT_EQ(in.name, "inside");
  EXPECT_EQ(in.device, "0000:00:06.0");
  EXPECT_EQ(in.addr, 0x0a00010au);
  EXPECT_EQ(in.prefix_len, 24);
  EXPECT_EQ(in.mtu, 8500);
  EXPECT_EQ(in.mss_clamp, 1360);
  EXPECT_EQ(in.loc.file, "full.toml");
  EXPECT_EQ(in.loc.line, 5);
  const Interface& inet = c.interfaces[1];
  EXPECT_EQ(inet.name, "internet");
  EXPECT_EQ(inet.device, "net_af_packet2,iface=nat-inet");
  EXPECT_EQ(inet.addr, 0x0a00030au);
  EXPECT_EQ(inet.prefix_len, 28);
  EXPECT_EQ(inet.mtu, 1500);
  EXPECT_EQ(inet.mss_clamp, 0);
  EXPECT_EQ(inet.loc.line, 11);

  ASSERT_EQ(c.routes.size(), 2u);
  const Route& def = c.routes[0];
  EXPECT_EQ(def.prefixes, (std::vector<Prefix>{{0, 0}}));
  EXPECT_EQ(def.prefix_list, "");
  EXPECT_EQ(def.via, 0x0a000301u);
  EXPECT_EQ(def.interface, "internet");
  EXPECT_EQ(def.interface_index, 1u);
  EXPECT_EQ(def.loc.line, 15);
  const Route& s3 = c.routes[1];
  EXPECT_EQ(s3.prefixes, (std::vector<Prefix>{{0x34db0000u, 16}, {0x03050000u, 19}}));
  EXPECT_EQ(s3.prefix_list, (dir.path() / "lists/s3.txt").string());
  EXPECT_EQ(s3.via, 0u);  // on-link
  EXPECT_EQ(s3.interface, "inside");
  EXPECT_EQ(s3.interface_index, 0u);
  EXPECT_EQ(s3.loc.line, 19);

  ASSERT_EQ(c.snat.size(), 1u);
  EXPECT_EQ(c.snat[0].from, (std::vector<Prefix>{{0xc0a80000u, 16}, {0xac100000u, 12}}));
  EXPECT_EQ(c.snat[0].to, (std::vector<uint32_t>{0x0a00030bu, 0x0a00030cu}));
  EXPECT_EQ(c.snat[0].port_min, 2000);
  EXPECT_EQ(c.snat[0].port_max, 3000);
  EXPECT_EQ(c.snat[0].loc.line, 22);

  EXPECT_EQ(c.timeouts.udp, 120u);
  EXPECT_EQ(c.timeouts.tcp_established, 350u);
  EXPECT_EQ(c.timeouts.tcp_transitory, 30u);
  EXPECT_EQ(c.timeouts.icmp, 10u);
  EXPECT_EQ(c.timeouts.fragment, 5u);

  EXPECT_FALSE(c.nat.port_preservation);
  EXPECT_FALSE(c.nat.port_overlapping);
  EXPECT_FALSE(c.nat.hairpinning);
  EXPECT_EQ(c.nat.max_sessions, 4096u);

  ASSERT_EQ(c.acl.size(), 2u);
  const AclRule& a0 = c.acl[0];
  EXPECT_FALSE(a0.allow);
  EXPECT_EQ(a0.src, (Prefix{0x0a000000u, 8}));
  EXPECT_EQ(a0.dst, (Prefix{0xa9fea9feu, 32}));
  EXPECT_EQ(a0.proto, 6);
  EXPECT_EQ(a0.sport, (PortRange{1024, 65535}));
  EXPECT_EQ(a0.dport, (PortRange{80, 80}));
  EXPECT_EQ(a0.loc.line, 38);
  const AclRule& a1 = c.acl[1];
  EXPECT_TRUE(a1.allow);
  EXPECT_FALSE(a1.src.has_value());
  EXPECT_FALSE(a1.dst.has_value());
  EXPECT_EQ(a1.proto, 47);
  EXPECT_EQ(a1.sport, (PortRange{0, 65535}));
  EXPECT_EQ(a1.dport, (PortRange{0, 65535}));
  EXPECT_FALSE(c.acl_default_allow);

  EXPECT_EQ(c.metrics.listen, "0.0.0.0:9100");
  EXPECT_EQ(c.control.socket, "/tmp/natgw.sock");
}

TEST(ConfigLoad, DefaultsForEverythingOptional) {
  const auto r = load(lines({kIf1, kIf2, kIf3, kIf4, "[[snat]]", "from = [\"192.168.0.0/16\"]"}));
  ASSERT_TRUE(r.ok()) << dump(r);
  const Config& c = *r.config;
  EXPECT_EQ(c.dataplane.workers, 1u);
  EXPECT_TRUE(c.dataplane.eal.empty());
  EXPECT_EQ(c.dataplane.mbufs, 0u);
  EXPECT_EQ(c.interfaces[0].mtu, 1500);
  EXPECT_EQ(c.interfaces[0].mss_clamp, 0);
  EXPECT_TRUE(c.routes.empty());
  EXPECT_TRUE(c.snat[0].to.empty());
  EXPECT_EQ(c.snat[0].port_min, 1024);
  EXPECT_EQ(c.snat[0].port_max, 65535);
  EXPECT_EQ(c.timeouts.udp, 300u);
  EXPECT_EQ(c.timeouts.tcp_established, 7440u);
  EXPECT_EQ(c.timeouts.tcp_transitory, 240u);
  EXPECT_EQ(c.timeouts.icmp, 60u);
  EXPECT_EQ(c.timeouts.fragment, 2u);
  EXPECT_TRUE(c.nat.port_preservation);
  EXPECT_TRUE(c.nat.port_overlapping);
  EXPECT_FALSE(c.nat.hairpinning);
  EXPECT_EQ(c.nat.max_sessions, 1u << 20);
  EXPECT_TRUE(c.acl.empty());
  EXPECT_TRUE(c.acl_default_allow);
  EXPECT_EQ(c.metrics.listen, "");
  EXPECT_EQ(c.control.socket, "/run/natgw/natgw.sock");
}

TEST(ConfigLoad, ShortTimeoutsAreAllowed) {
  const auto r = load(lines({kIf1, kIf2, kIf3, kIf4, "[timeouts]", "udp = 1", "tcp_established = 1",
                             "tcp_transitory = 1", "icmp = 1", "fragment = 1"}));
  ASSERT_TRUE(r.ok()) << dump(r);
  EXPECT_EQ(r.config->timeouts.udp, 1u);
  EXPECT_EQ(r.config->timeouts.tcp_established, 1u);
  EXPECT_EQ(r.config->timeouts.fragment, 1u);
}

TEST(ConfigLoad, AclProtocolsByNameAndNumber) {
  const auto r = load(lines({kIf1, kIf2, kIf3, kIf4,                       // 1-4
                             "[[acl]]", "action = \"allow\"", "protocol = \"udp\"", "dst_ports = 53",
                             "[[acl]]", "action = \"allow\"", "protocol = \"icmp\"",
                             "[[acl]]", "action = \"allow\"", "protocol = \"any\"",
                             "[[acl]]", "action = \"allow\"", "protocol = \"132\""}));
  ASSERT_TRUE(r.ok()) << dump(r);
  ASSERT_EQ(r.config->acl.size(), 4u);
  EXPECT_EQ(r.config->acl[0].proto, 17);
  EXPECT_EQ(r.config->acl[0].dport, (PortRange{53, 53}));
  EXPECT_EQ(r.config->acl[1].proto, 1);
  EXPECT_EQ(r.config->acl[2].proto, 0);
  EXPECT_EQ(r.config->acl[3].proto, 132);
}

TEST(ConfigLoad, SlashThirtyOneAndThirtyTwoHaveNoNetworkAddress) {
  const auto r = load(lines({kIf1, kIf2, kIf3, "address = \"10.0.1.0/31\"", "[[interface]]",
                             "name = \"b\"", "device = \"net_null0\"", "address = \"10.0.9.0/32\""}));
  ASSERT_TRUE(r.ok()) << dump(r);
  EXPECT_EQ(r.config->interfaces[0].prefix_len, 31);
  EXPECT_EQ(r.config->interfaces[1].addr, 0x0a000900u);
}

// ---------------------------------------------------------------- file errors

TEST(ConfigErrors, MissingFileHasLineZero) {
  const auto r = load_file("/nonexistent/natgw.toml");
  ASSERT_FALSE(r.ok());
  ASSERT_EQ(r.errors.size(), 1u);
  EXPECT_EQ(r.errors[0].file, "/nonexistent/natgw.toml");
  EXPECT_EQ(r.errors[0].line, 0);
  EXPECT_EQ(r.errors[0].str(), "/nonexistent/natgw.toml: cannot read config file: No such file or directory");
}

TEST(ConfigErrors, ErrorStrFormats) {
  EXPECT_EQ((Error{"a.toml", 12, "bad"}).str(), "a.toml:12: bad");
  EXPECT_EQ((Error{"a.toml", 0, "bad"}).str(), "a.toml: bad");
}

TEST(ConfigErrors, TomlSyntaxErrorGivesItsLine) {
  const auto r = load(lines({kIf1, kIf2, kIf3, "address = 10.0.1.10/24"}));
  ASSERT_FALSE(r.ok());
  ASSERT_EQ(r.errors.size(), 1u);
  EXPECT_EQ(r.errors[0].file, "t.toml");
  EXPECT_EQ(r.errors[0].line, 4);
}

// ---------------------------------------------------------------- structure

TEST(ConfigErrors, UnknownKeysAndTablesWithSuggestions) {
  const auto r = load(lines({
      "workers = 2",            // 1: belongs in [dataplane]
      "[dataplane]",            // 2
      "worker = 2",             // 3: typo
      "[timeout]",              // 4: typo of a table
      "udp = 5",                // 5
      kIf1, kIf2, kIf3, kIf4,   // 6-9
      "mtuu = 1500",            // 10
      "colour = \"blue\"",      // 11: nothing close
      "[[route]]",              // 12
      "prefix = \"0.0.0.0/0\"", // 13
      "prefixlist = \"x.txt\"", // 14
      "interface = \"inside\"", // 15
      "[nat]",                  // 16
      "Hairpinning = true",     // 17
      "[wibble]",               // 18
  }));
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(HasError(r, 1, "unknown top-level key \"workers\" (\"workers\" belongs under [dataplane])"));
  EXPECT_TRUE(HasError(r, 3, "unknown key \"worker\" in [dataplane] (did you mean \"workers\"?)"));
  EXPECT_TRUE(HasError(r, 4, "unknown table [timeout] (did you mean [timeouts]?)"));
  EXPECT_TRUE(HasError(r, 10, "unknown key \"mtuu\" in [[interface]] (did you mean \"mtu\"?)"));
  EXPECT_TRUE(HasError(r, 11, "unknown key \"colour\" in [[interface]]; valid: name, device, address"));
  EXPECT_TRUE(HasError(r, 14, "(did you mean \"prefix_list\"?)"));
  EXPECT_TRUE(HasError(r, 17, "(did you mean \"hairpinning\"?)"));
  EXPECT_TRUE(HasError(r, 18, "unknown table [wibble]; valid tables: dataplane, interface"));
  EXPECT_EQ(r.errors.size(), 8u) << dump(r);
}

TEST(ConfigErrors, SectionWrittenWithTheWrongBrackets) {
  const auto r = load(lines({"[interface]", "name = \"x\"", "[[dataplane]]", "workers = 1"}));
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(HasError(r, 1, "interface must be an array of tables: write [[interface]]"));
  EXPECT_TRUE(HasError(r, 3, "dataplane must be a table: write [dataplane]"));
}

TEST(ConfigErrors, WrongTypes) {
  const auto r = load(lines({
      "[dataplane]",                  // 1
      "workers = \"2\"",              // 2
      "eal = \"--no-huge\"",          // 3
      "[[interface]]",                // 4
      "name = 7",                     // 5
      "device = \"net_null0\"",       // 6
      "address = \"10.0.1.10/24\"",   // 7
      "mtu = 1500.0",                 // 8
      "[nat]",                        // 9
      "hairpinning = \"yes\"",        // 10
      "[[snat]]",                     // 11
      "from = \"192.168.0.0/16\"",    // 12
      "[timeouts]",                   // 13
      "udp = 2024-01-01",             // 14
  }));
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(HasError(r, 2, "dataplane.workers must be an integer, got a string"));
  EXPECT_TRUE(HasError(r, 3, "dataplane.eal must be an array of strings, got a string"));
  EXPECT_TRUE(HasError(r, 5, "interface.name must be a string, got an integer"));
  EXPECT_TRUE(HasError(r, 8, "interface.mtu must be an integer, got a float"));
  EXPECT_TRUE(HasError(r, 10, "nat.hairpinning must be a boolean (true or false), got a string"));
  EXPECT_TRUE(HasError(r, 12, "snat.from must be an array of prefixes, got a string"));
  EXPECT_TRUE(HasError(r, 14, "timeouts.udp must be an integer, got a date"));
}

TEST(ConfigErrors, EalEntriesMustBeStrings) {
  const auto r = load(lines({"[dataplane]", "eal = [", "  \"--no-huge\",", "  512,", "]", kIf1, kIf2,
                             kIf3, kIf4}));
  ASSERT_FALSE(r.ok());
  ASSERT_EQ(r.errors.size(), 1u) << dump(r);
  EXPECT_TRUE(HasError(r, 4, "dataplane.eal entry must be a string, got an integer"));
}

TEST(ConfigErrors, MissingRequiredKeysAtTheTableLine) {
  const auto r = load(lines({"[[interface]]", "name = \"inside\"", "", "[[acl]]", "dst = \"10.0.0.0/8\"",
                             "[[route]]", "via = \"10.0.1.1\""}));
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(HasError(r, 1, "[[interface]] is missing required key \"device\""));
  EXPECT_TRUE(HasError(r, 1, "[[interface]] is missing required key \"address\""));
  EXPECT_TRUE(HasError(r, 4, "[[acl]] is missing required key \"action\""));
  EXPECT_TRUE(HasError(r, 6, "[[route]] needs prefix or prefix_list"));
  EXPECT_TRUE(HasError(r, 6, "[[route]] is missing required key \"interface\""));
}

// ---------------------------------------------------------------- numbers

TEST(ConfigErrors, WorkersRange) {
  for (const char* bad : {"0", "65", "-1"}) {
    const auto r = load(lines({kIf1, kIf2, kIf3, kIf4, "[dataplane]", std::string("workers = ") + bad}));
    EXPECT_TRUE(HasError(r, 6, "dataplane.workers = " + std::string(bad) + " is out of range 1..64"));
  }
  EXPECT_TRUE(load(lines({kIf1, kIf2, kIf3, kIf4, "[dataplane]", "workers = 64"})).ok());
}

TEST(ConfigErrors, TimeoutsMustBePositiveAndFragmentsShort) {
  const auto r = load(lines({kIf1, kIf2, kIf3, kIf4, "[timeouts]", "udp = 0", "icmp = -5", "fragment = 31"}));
  EXPECT_TRUE(HasError(r, 6, "timeouts.udp = 0 is out of range 1..604800"));
  EXPECT_TRUE(HasError(r, 7, "timeouts.icmp = -5 is out of range"));
  EXPECT_TRUE(HasError(r, 8, "timeouts.fragment = 31 is out of range 1..30"));
}

TEST(ConfigErrors, MtuAndMssClamp) {
  const auto r = load(lines({
      kIf1, kIf2, kIf3, kIf4, "mtu = 67",                                          // 1-5
      "[[interface]]", "name = \"b\"", "device = \"net_null1\"",                    // 6-8
      "address = \"10.0.2.10/24\"", "mss_clamp = 535",                              // 9-10
      "[[interface]]", "name = \"c\"", "device = \"net_null2\"",                    // 11-13
      "address = \"10.0.3.10/24\"", "mtu = 1400", "mss_clamp = 1400",               // 14-16
      "[[interface]]", "name = \"d\"", "device = \"net_null3\"",                    // 17-19
      "address = \"10.0.4.10/24\"", "mtu = 9217",                                   // 20-21
  }));
  EXPECT_TRUE(HasError(r, 5, "interface.mtu = 67 is out of range 68..9216"));
  EXPECT_TRUE(HasError(r, 10, "interface.mss_clamp = 535 must be 0 (off) or 536..9176"));
  EXPECT_TRUE(HasError(r, 16, "interface.mss_clamp = 1400 is larger than mtu 1400 minus 40"));
  EXPECT_TRUE(HasError(r, 21, "interface.mtu = 9217 is out of range"));
  EXPECT_EQ(r.errors.size(), 4u) << dump(r);
}

TEST(ConfigLoad, XdpSteeringOnAnAfXdpInterface) {
  const auto r = load(lines({
      "[[interface]]", "name = \"eni\"", "device = \"net_af_xdp0,iface=ens5\"",  // 1-3
      "address = \"10.0.1.20/24\"", "mtu = 3498", "xdp_steering = true",         // 4-6
      "xdp_host_addresses = [\"10.0.1.10\", \"10.0.1.11\"]",                     // 7
      "[[interface]]", "name = \"plain\"", "device = \"net_af_xdp1,iface=ens6\"", // 8-10
      "address = \"10.0.2.20/24\"", "xdp_steering = true",                         // 11-12
  }));
  ASSERT_TRUE(r.ok()) << dump(r);
  const auto& i = r.config->interfaces;
  EXPECT_TRUE(i[0].xdp_steering);
  EXPECT_EQ(i[0].xdp_host_addresses, (std::vector<uint32_t>{0x0a00010au, 0x0a00010bu}));
  EXPECT_TRUE(i[1].xdp_steering);
  EXPECT_TRUE(i[1].xdp_host_addresses.empty());  // the kernel's addresses, read at start
  const auto off = load(lines({kIf1, kIf2, kIf3, kIf4}));
  ASSERT_TRUE(off.ok()) << dump(off);
  EXPECT_FALSE(off.config->interfaces[0].xdp_steering);
}

TEST(ConfigErrors, XdpSteering) {
  const auto r = load(lines({
      kIf1, kIf2, kIf3, kIf4, "xdp_steering = true",                                    // 1-5: af_packet
      "[[interface]]", "name = \"b\"", "device = \"net_af_xdp1,iface=ens6\"",          // 6-8
      "address = \"10.0.2.10/24\"", "mtu = 9001", "xdp_steering = true",               // 9-11
      "[[interface]]", "name = \"c\"", "device = \"net_af_xdp2,iface=ens7\"",          // 12-14
      "address = \"10.0.3.10/24\"", "xdp_host_addresses = [\"10.0.3.1\"]",            // 15-16
      "[[interface]]", "name = \"d\"", "device = \"net_af_xdp3,iface=ens8\"",          // 17-19
      "address = \"10.0.4.10/24\"", "xdp_steering = true",                             // 20-21
      "xdp_host_addresses = [\"10.0.4.10\", \"224.0.0.1\", \"10.0.4.5\",",            // 22
      "                      \"10.0.4.5\"]",                                           // 23
      "[[interface]]", "name = \"e\"", "device = \"net_af_xdp4\"",                     // 24-26
      "address = \"10.0.5.10/24\"", "xdp_steering = \"yes\"",                          // 27-28
  }));
  EXPECT_TRUE(HasError(r, 5, "xdp_steering needs an af_xdp device"));
  EXPECT_TRUE(HasError(r, 11, "mtu 9001 is above 3498"));
  EXPECT_TRUE(HasError(r, 11, "this mode and MTU 9001 exclude each other"));
  EXPECT_TRUE(HasError(r, 16, "xdp_host_addresses is only used with xdp_steering = true"));
  EXPECT_TRUE(HasError(r, 22, "10.0.4.10 is natgw's own address"));
  EXPECT_TRUE(HasError(r, 22, "224.0.0.1 is not a unicast host address"));
  EXPECT_TRUE(HasError(r, 23, "10.0.4.5 is listed twice"));
  EXPECT_TRUE(HasError(r, 28, "interface.xdp_steering must be a boolean"));
  EXPECT_EQ(r.errors.size(), 7u) << dump(r);
}

// ---------------------------------------------------------------- addresses

TEST(ConfigErrors, BadAddressesAndPrefixes) {
  const auto r = load(lines({
      "[[interface]]", "name = \"inside\"", "device = \"net_null0\"",
      "address = \"10.0.1.10\"",                     // 4: no length
      "[[interface]]", "name = \"b\"", "device = \"net_null1\"",
      "address = \"010.0.2.10/24\"",                 // 8: leading zero
      "[[interface]]", "name = \"c\"", "device = \"net_null2\"",
      "address = \"10.0.3.0/24\"",                   // 12: network address
      "[[interface]]", "name = \"d\"", "device = \"net_null3\"",
      "address = \"10.0.4.255/24\"",                 // 16: broadcast
      "[[interface]]", "name = \"e\"", "device = \"net_null4\"",
      "address = \"224.0.0.1/24\"",                  // 20: multicast
      "[[route]]",
      "prefix = \"10.1.0.1/16\"",                    // 22: host bits
      "interface = \"inside\"",
      "[[acl]]", "action = \"deny\"",
      "dst = \"169.254.169.254/33\"",                // 26
      "src = \"1.2.3.256/32\"",                      // 27
      "[[snat]]", "from = [\"192.169.0.0/15\"]",     // 29: host bits
      "to = [\"10.0.1.300\"]",                       // 30
  }));
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(HasError(r, 4, "interface.address \"10.0.1.10\": missing prefix length"));
  EXPECT_TRUE(HasError(r, 8, "octet \"010\" has a leading zero"));
  EXPECT_TRUE(HasError(r, 12, "10.0.3.0 is the subnet's network address"));
  EXPECT_TRUE(HasError(r, 16, "10.0.4.255 is the subnet's broadcast address"));
  EXPECT_TRUE(HasError(r, 20, "224.0.0.1 is not a unicast host address"));
  EXPECT_TRUE(HasError(r, 22, "route.prefix \"10.1.0.1/16\": host bits 0.0.0.1 are set below the /16 mask "
                              "(did you mean 10.1.0.0/16?)"));
  EXPECT_TRUE(HasError(r, 26, "acl.dst \"169.254.169.254/33\": prefix length /33 is over 32"));
  EXPECT_TRUE(HasError(r, 27, "acl.src \"1.2.3.256/32\": octet 256 is over 255"));
  EXPECT_TRUE(HasError(r, 29, "snat.from \"192.169.0.0/15\": host bits 0.1.0.0 are set below the /15 mask"));
  EXPECT_TRUE(HasError(r, 30, "snat.to \"10.0.1.300\": octet 300 is over 255"));
}

TEST(ConfigErrors, DuplicateInterfaceNamesAndDevices) {
  const auto r = load(lines({
      "[[interface]]", "name = \"inside\"", "device = \"0000:00:06.0\"", "address = \"10.0.1.10/24\"",
      "[[interface]]", "name = \"inside\"", "device = \"net_null1\"", "address = \"10.0.2.10/24\"",   // 6
      "[[interface]]", "name = \"c\"", "device = \"00:06.0\"", "address = \"10.0.3.10/24\"",          // 11
      "[[interface]]", "name = \"d\"", "device = \"net_null1,size=64\"", "address = \"10.0.4.10/24\"",  // 15
  }));
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(HasError(r, 6, "interface name \"inside\" is already used by the interface at line 1"));
  EXPECT_TRUE(HasError(r, 11, "device \"0000:00:06.0\" is already used by interface \"inside\" (line 1)"));
  EXPECT_TRUE(HasError(r, 15, "device \"net_null1\" is already used by interface \"inside\" (line 5)"));
  EXPECT_EQ(r.errors.size(), 3u) << dump(r);
}

TEST(ConfigErrors, OverlappingInterfaceSubnets) {
  const auto r = load(lines({
      kIf1, kIf2, kIf3, kIf4,                                                                   // 10.0.1.10/24
      "[[interface]]", "name = \"b\"", "device = \"net_null1\"", "address = \"10.0.1.20/24\"",  // 8: same subnet
      "[[interface]]", "name = \"c\"", "device = \"net_null2\"", "address = \"10.0.0.5/16\"",   // 12: contains it
      "[[interface]]", "name = \"d\"", "device = \"net_null3\"", "address = \"10.0.2.10/24\"",  // 16: inside c
  }));
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(HasError(r, 8, "interface.address 10.0.1.20/24 overlaps interface \"inside\" subnet "
                             "10.0.1.0/24 (line 1)"));
  EXPECT_TRUE(HasError(r, 12, "overlaps interface \"inside\" subnet 10.0.1.0/24"));
  EXPECT_TRUE(HasError(r, 12, "overlaps interface \"b\" subnet 10.0.1.0/24"));
  EXPECT_TRUE(HasError(r, 16, "overlaps interface \"c\" subnet 10.0.0.0/16 (line 9)"));
  EXPECT_EQ(r.errors.size(), 4u) << dump(r);
}

TEST(ConfigErrors, InterfaceCountLimits) {
  const auto none = load(lines({"[dataplane]", "workers = 1"}));
  ASSERT_EQ(none.errors.size(), 1u);
  EXPECT_EQ(none.errors[0].line, 0);
  EXPECT_NE(none.errors[0].message.find("no [[interface]] defined"), std::string::npos);

  const auto interfaces = [](int count) {
    std::string text;
    for (int i = 0; i < count; ++i) {
      const std::string n = std::to_string(i);
      text += lines({"[[interface]]", "name = \"if" + n + "\"", "device = \"net_null" + n + "\"",
                     "address = \"10.0." + n + ".10/24\""});
    }
    return text;
  };
  const auto many = load(interfaces(17));
  ASSERT_EQ(many.errors.size(), 1u) << dump(many);
  EXPECT_TRUE(HasError(many, 65, "too many interfaces (17): at most 16"));
  const auto sixteen = load(interfaces(16));
  EXPECT_TRUE(sixteen.ok()) << dump(sixteen);
}

// ---------------------------------------------------------------- routes

TEST(ConfigErrors, RouteInterfaceAndGateway) {
  const auto r = load(three_interfaces() + lines({
      "[[route]]", "prefix = \"0.0.0.0/0\"", "via = \"10.0.9.1\"", "interface = \"internet\"",  // 13-16
      "[[route]]", "prefix = \"1.0.0.0/8\"", "interface = \"intranet\"",                       // 17-19
      "[[route]]", "prefix = \"2.0.0.0/8\"", "via = \"10.0.2.10\"", "interface = \"endpoint\"", // 20-23
      "[[route]]", "prefix = \"3.0.0.0/8\"", "prefix_list = \"x.txt\"", "interface = \"wan\"",  // 24-27
      "[[route]]", "prefix = \"4.0.0.0/8\"", "via = \"10.0.2\"", "interface = \"endpoint\"",    // 28-31
  }));
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(HasError(r, 15, "route.via 10.0.9.1 is not inside interface \"internet\" subnet 10.0.3.0/24"));
  EXPECT_TRUE(HasError(r, 19, "route.interface \"intranet\" is not a defined [[interface]] "
                              "(did you mean \"internet\"?)"));
  EXPECT_TRUE(HasError(r, 22, "route.via 10.0.2.10 is interface \"endpoint\"'s own address"));
  EXPECT_TRUE(HasError(r, 24, "sets both prefix and prefix_list"));
  EXPECT_TRUE(HasError(r, 27, "route.interface \"wan\" is not a defined [[interface]]; "
                              "valid: inside, endpoint, internet"));
  EXPECT_TRUE(HasError(r, 30, "route.via \"10.0.2\": expected an IPv4 address"));
  EXPECT_EQ(r.errors.size(), 6u) << dump(r);
}

// A gateway nobody can be (the subnet's network or broadcast address), and a route that
// would take an interface's own subnet away from its link.
TEST(ConfigErrors, RouteGatewayAndConnectedSubnet) {
  const auto r = load(three_interfaces() + lines({
      "[[route]]", "prefix = \"0.0.0.0/0\"", "via = \"10.0.3.255\"", "interface = \"internet\"",  // 13-16
      "[[route]]", "prefix = \"1.0.0.0/8\"", "via = \"10.0.2.0\"", "interface = \"endpoint\"",    // 17-20
      "[[route]]", "prefix = \"10.0.2.0/24\"", "via = \"10.0.3.1\"", "interface = \"internet\"",  // 21-24
      "[[route]]", "prefix = \"10.0.1.0/24\"", "via = \"10.0.1.1\"", "interface = \"inside\"",    // 25-28
      "[[route]]", "prefix = \"10.0.3.0/24\"", "interface = \"internet\"",                        // 29-31 ok
      "[[route]]", "prefix = \"10.0.2.128/25\"", "via = \"10.0.3.1\"", "interface = \"internet\"", // 32-35 ok
  }));
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(HasError(r, 15, "route.via 10.0.3.255 is the broadcast address of interface \"internet\" subnet "
                              "10.0.3.0/24: no neighbour answers ARP for it"));
  EXPECT_TRUE(HasError(r, 19, "route.via 10.0.2.0 is the network address of interface \"endpoint\""));
  EXPECT_TRUE(HasError(r, 22, "route 10.0.2.0/24 is interface \"endpoint\"'s own subnet, reached on that link: "
                              "a route cannot send it to interface \"internet\""));
  EXPECT_TRUE(HasError(r, 26, "route 10.0.1.0/24 is interface \"inside\"'s own subnet, reached on that link: "
                              "a route cannot send it via a gateway"));
  EXPECT_EQ(r.errors.size(), 4u) << dump(r);
}

// The first [[snat]] rule whose sources match wins: a rule an earlier one (or several)
// covers entirely would be ignored, its pool or ports with it.
TEST(ConfigErrors, SnatRuleThatNeverApplies) {
  const auto r = load(three_interfaces() + lines({
      "[[snat]]", "from = [\"192.168.0.0/16\"]",                            // 13-14
      "[[snat]]", "from = [\"192.168.10.0/24\"]", "to = [\"10.0.3.11\"]",   // 15-17
      "[[snat]]", "from = [\"10.0.0.0/8\"]",                                // 18-19
      "[[snat]]", "from = [\"10.1.0.0/16\", \"192.168.1.0/24\"]",           // 20-21
      "[[snat]]", "from = [\"172.16.0.0/12\", \"192.168.2.0/24\"]",         // 22-23 ok: 172.16/12 is new
  }));
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(HasError(r, 15, "this [[snat]] rule never applies: the rule at line 13 matches all of its sources "
                              "first (put the narrower rule first)"));
  EXPECT_TRUE(HasError(r, 20, "this [[snat]] rule never applies: the rules at lines 13, 18 match all"));
  EXPECT_EQ(r.errors.size(), 2u) << dump(r);
  const auto ok = load(three_interfaces() + lines({
      "[[snat]]", "from = [\"192.168.10.0/24\"]", "to = [\"10.0.3.11\"]",
      "[[snat]]", "from = [\"192.168.0.0/16\"]",
  }));
  EXPECT_TRUE(ok.ok()) << dump(ok);
}

TEST(ConfigErrors, DuplicateRoutePrefixes) {
  TempDir dir;
  dir.write("s3.txt", lines({"52.219.0.0/16", "3.5.0.0/19"}));
  const auto r = load(three_interfaces() + lines({
      "[[route]]", "prefix = \"0.0.0.0/0\"", "interface = \"internet\"",   // 13-15
      "[[route]]", "prefix = \"0.0.0.0/0\"", "interface = \"inside\"",     // 16-18
      "[[route]]", "prefix_list = \"s3.txt\"", "interface = \"endpoint\"", // 19-21
      "[[route]]", "prefix = \"3.5.0.0/19\"", "interface = \"internet\"",  // 22-24
      "[[route]]", "prefix = \"3.5.0.0/20\"", "interface = \"internet\"",  // 25-27: different length: fine
  }), dir.path().string());
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(HasError(r, 17, "duplicate route 0.0.0.0/0: already routed at t.toml:14"));
  EXPECT_TRUE(HasError(r, 23, "duplicate route 3.5.0.0/19: already routed at t.toml:20 (prefix list " +
                                  (dir.path() / "s3.txt").string() + ")"));
  EXPECT_EQ(r.errors.size(), 2u) << dump(r);
}

TEST(ConfigErrors, PrefixListMissingOrUnreadableIsReportedAtTheRoute) {
  TempDir dir;
  fs::create_directories(dir.path() / "adir");
  const auto r = load(three_interfaces() + lines({
      "[[route]]", "prefix_list = \"missing.txt\"", "interface = \"endpoint\"",  // 13-15
      "[[route]]", "prefix_list = \"adir\"", "interface = \"endpoint\"",         // 16-18
  }), dir.path().string());
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(HasError(r, 14, "cannot read prefix list " + (dir.path() / "missing.txt").string() +
                                  ": No such file or directory"));
  EXPECT_TRUE(HasError(r, 17, "cannot read prefix list " + (dir.path() / "adir").string() + ": is a directory"));
  EXPECT_EQ(r.errors.size(), 2u) << dump(r);
}

TEST(ConfigErrors, BadLinesInsideAPrefixListUseTheListsLines) {
  TempDir dir;
  const std::string list = dir.write("s3.txt", lines({
      "# S3 ap-northeast-1",       // 1
      "",                          // 2
      "52.219.0.0/16",             // 3
      "52.219.0.1/16   # oops",    // 4
      "   3.5.0.0/19\r",           // 5: CRLF and indent are fine
      "s3.amazonaws.com",          // 6
      "52.219.0.0/16",             // 7: duplicate
      "1.2.3.0/24 extra",          // 8
  }));
  const auto r = load(three_interfaces() + lines({"[[route]]", "prefix_list = \"s3.txt\"",
                                                  "interface = \"endpoint\""}),
                      dir.path().string());
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(HasError(r, 4, "bad prefix \"52.219.0.1/16\": host bits 0.0.0.1", list));
  EXPECT_TRUE(HasError(r, 6, "bad prefix \"s3.amazonaws.com\"", list));
  EXPECT_TRUE(HasError(r, 7, "duplicate prefix 52.219.0.0/16 (first at line 3)", list));
  EXPECT_TRUE(HasError(r, 8, "bad prefix \"1.2.3.0/24 extra\"", list));
  EXPECT_EQ(r.errors.size(), 4u) << dump(r);
}

TEST(ConfigErrors, EmptyPrefixList) {
  TempDir dir;
  dir.write("empty.txt", lines({"# nothing yet", ""}));
  const auto r = load(three_interfaces() + lines({"[[route]]", "prefix_list = \"empty.txt\"",
                                                  "interface = \"endpoint\""}),
                      dir.path().string());
  EXPECT_TRUE(HasError(r, 14, "has no prefixes"));
}

TEST(ConfigLoad, PrefixListPathsResolveAgainstTheConfigFolder) {
  TempDir dir;
  dir.write("etc/lists/s3.txt", lines({"52.219.0.0/16"}));
  const std::string abs_list = dir.write("abs.txt", lines({"16.12.0.0/15"}));
  const std::string cfg = dir.write("etc/natgw.toml", three_interfaces() + lines({
      "[[route]]", "prefix_list = \"lists/s3.txt\"", "interface = \"endpoint\"",
      "[[route]]", "prefix_list = \"../abs.txt\"", "interface = \"endpoint\"",
      "[[route]]", "prefix_list = \"" + abs_list + "\"", "interface = \"inside\"",
  }));
  // From another working directory: relative lists still resolve against the config's folder.
  const auto r = load_file(cfg);
  ASSERT_FALSE(r.ok());  // ../abs.txt and abs_list are the same file: duplicate routes
  ASSERT_EQ(r.errors.size(), 1u) << dump(r);
  EXPECT_TRUE(HasError(r, 20, "duplicate route 16.12.0.0/15: already routed at " + cfg + ":17 (prefix list " +
                                  abs_list + ")", cfg));

  const std::string ok_cfg = dir.write("etc/ok.toml", three_interfaces() + lines({
      "[[route]]", "prefix_list = \"lists/s3.txt\"", "interface = \"endpoint\"",
      "[[route]]", "prefix_list = \"../abs.txt\"", "interface = \"endpoint\""}));
  const auto ok = load_file(ok_cfg);
  ASSERT_TRUE(ok.ok()) << dump(ok);
  EXPECT_EQ(ok.config->path, ok_cfg);
  EXPECT_EQ(ok.config->routes[0].prefix_list, (dir.path() / "etc/lists/s3.txt").string());
  EXPECT_EQ(ok.config->routes[0].prefixes, (std::vector<Prefix>{{0x34db0000u, 16}}));
  EXPECT_EQ(ok.config->routes[1].prefix_list, abs_list);
  EXPECT_EQ(ok.config->routes[1].prefixes, (std::vector<Prefix>{{0x100c0000u, 15}}));
}

// ---------------------------------------------------------------- snat, acl, nat, metrics

TEST(ConfigErrors, SnatPoolAndPorts) {
  const auto r = load(lines({
      kIf1, kIf2, kIf3, kIf4,
      "[[snat]]", "from = [\"192.168.0.0/16\"]",
      "to = [\"10.0.1.11\",", "      \"10.0.1.12\",", "      \"10.0.1.11\"]",  // 7-9
      "ports = \"2000-1000\"",                                              // 10
      "[[snat]]", "from = []", "to = []", "ports = \"0-100\"",              // 11-14
      "[[snat]]", "from = [\"10.0.0.0/8\"]", "ports = \"1024-70000\"",      // 15-17
      "[[snat]]", "from = [\"172.16.0.0/12\"]", "ports = \"any\"",          // 18-20
      "[[snat]]", "from = [\"100.64.0.0/10\"]", "ports = \"5000\"",         // 21-23 ok
  }));
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(HasError(r, 9, "snat.to 10.0.1.11 is listed twice (first at line 7)"));
  EXPECT_TRUE(HasError(r, 10, "snat.ports \"2000-1000\": range start 2000 is above its end 1000"));
  EXPECT_TRUE(HasError(r, 12, "snat.from is empty"));
  EXPECT_TRUE(HasError(r, 13, "snat.to is empty: leave it out"));
  EXPECT_TRUE(HasError(r, 14, "snat.ports \"0-100\": ports must be at least 1"));
  EXPECT_TRUE(HasError(r, 17, "snat.ports \"1024-70000\": expected a port \"N\" or a range \"A-B\""));
  EXPECT_TRUE(HasError(r, 20, "snat.ports \"any\""));
  EXPECT_EQ(r.errors.size(), 7u) << dump(r);
}

TEST(ConfigErrors, AclRules) {
  const auto r = load(lines({
      kIf1, kIf2, kIf3, kIf4,
      "[[acl]]", "action = \"drop\"",                                     // 5-6
      "[[acl]]", "action = \"deny\"", "protocol = \"icmp\"", "dst_ports = \"80\"",  // 7-10
      "[[acl]]", "action = \"deny\"", "src_ports = 22",                   // 11-13: any protocol
      "[[acl]]", "action = \"deny\"", "protocol = 256",                   // 14-16
      "[[acl]]", "action = \"deny\"", "protocol = \"tpc\"",               // 17-19
      "[[acl]]", "action = \"deny\"", "protocol = \"tcp\"", "dst_ports = \"443-80\"",  // 20-23
      "[acl_default]", "action = \"reject\"",                             // 24-25
  }));
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(HasError(r, 6, "acl.action \"drop\" is not valid; valid: allow, deny"));
  EXPECT_TRUE(HasError(r, 10, "acl.dst_ports needs protocol = \"tcp\" or \"udp\""));
  EXPECT_TRUE(HasError(r, 13, "acl.src_ports needs protocol"));
  EXPECT_TRUE(HasError(r, 16, "acl.protocol = 256 is out of range 0..255"));
  EXPECT_TRUE(HasError(r, 19, "acl.protocol \"tpc\" is not valid (did you mean \"tcp\"?)"));
  EXPECT_TRUE(HasError(r, 23, "acl.dst_ports \"443-80\": range start 443 is above its end 80"));
  EXPECT_TRUE(HasError(r, 25, "acl_default.action \"reject\" is not valid"));
  EXPECT_EQ(r.errors.size(), 7u) << dump(r);
}

TEST(ConfigErrors, FilteringModesAndHairpinning) {
  const auto ei = load(lines({kIf1, kIf2, kIf3, kIf4, "[nat]", "filtering = \"endpoint-independent\"",
                              "hairpinning = true"}));
  ASSERT_TRUE(ei.ok()) << dump(ei);
  EXPECT_TRUE(ei.config->nat.endpoint_independent_filtering);
  EXPECT_TRUE(ei.config->nat.hairpinning);
  const auto ad = load(lines({kIf1, kIf2, kIf3, kIf4, "[nat]", "filtering = \"address-dependent\""}));
  ASSERT_FALSE(ad.ok());
  EXPECT_TRUE(HasError(ad, 6, "nat.filtering \"address-dependent\" is not implemented"));
  const auto typo = load(lines({kIf1, kIf2, kIf3, kIf4, "[nat]", "filtering = \"address-port-dependant\""}));
  EXPECT_TRUE(HasError(typo, 6, "(did you mean \"address-port-dependent\"?)"));
  const auto apd = load(lines({kIf1, kIf2, kIf3, kIf4, "[nat]", "filtering = \"address-port-dependent\""}));
  ASSERT_TRUE(apd.ok()) << dump(apd);
  EXPECT_FALSE(apd.config->nat.endpoint_independent_filtering);
  EXPECT_FALSE(apd.config->nat.hairpinning);
}

TEST(ConfigErrors, NatMaxSessions) {
  const auto r = load(lines({kIf1, kIf2, kIf3, kIf4, "[nat]", "max_sessions = 0"}));
  EXPECT_TRUE(HasError(r, 6, "nat.max_sessions = 0 is out of range 1..2147483647"));
  // Session indexes keep bit 31 for the direction: 2^31 used to pass the loader and fail at startup.
  const auto big = load(lines({kIf1, kIf2, kIf3, kIf4, "[nat]", "max_sessions = 2147483648"}));
  EXPECT_TRUE(HasError(big, 6, "nat.max_sessions = 2147483648 is out of range 1..2147483647"));
  EXPECT_TRUE(load(lines({kIf1, kIf2, kIf3, kIf4, "[nat]", "max_sessions = 2147483647"})).ok());
}

// Rule indexes name mapping realms below 128 (128 + interface belongs to rules without a pool).
TEST(ConfigErrors, AtMost128SnatRules) {
  const auto with = [](int n) {
    std::string t = lines({kIf1, kIf2, kIf3, kIf4});  // lines 1-4
    for (int i = 0; i < n; ++i) t += "[[snat]]\nfrom = [\"10." + std::to_string(i) + ".0.0/16\"]\n";
    return t;
  };
  EXPECT_TRUE(load(with(128)).ok());
  const auto r = load(with(129));
  EXPECT_TRUE(HasError(r, 5 + 2 * 128, "too many [[snat]] rules: at most 128")) << dump(r);
}

// What a reload cannot apply live, reported at the line of the table in the new file.
TEST(RestartReasons, LiveChangesPassRestartOnlyChangesAreNamed) {
  const std::string base = lines({"[dataplane]", "workers = 1", "eal = [\"--no-huge\"]",  // 1-3
                                  kIf1, kIf2, kIf3, kIf4,                                   // 4-7
                                  "[nat]", "max_sessions = 4096",                           // 8-9
                                  "[timeouts]", "udp = 300",                                // 10-11
                                  "[metrics]", "listen = \"127.0.0.1:9100\"",             // 12-13
                                  "[control]", "socket = \"/tmp/a.sock\""});              // 14-15
  const auto a = load(base);
  ASSERT_TRUE(a.ok()) << dump(a);
  const auto with = [&](std::string_view from, std::string_view to) {
    std::string t = base;
    const auto at = t.find(from);
    EXPECT_NE(at, std::string::npos) << from;
    t.replace(at, from.size(), to);
    auto r = load(t);
    EXPECT_TRUE(r.ok()) << dump(r);
    return restart_reasons(*a.config, *r.config);
  };
  EXPECT_TRUE(restart_reasons(*a.config, *a.config).empty());
  EXPECT_TRUE(with("udp = 300", "udp = 60").empty());  // timeouts apply live
  const auto one = [](const std::vector<Error>& v) { return v.size() == 1 ? v[0].str() : "(" + std::to_string(v.size()) + " reasons)"; };
  EXPECT_EQ(one(with("workers = 1", "workers = 2")),
            "t.toml:1: dataplane.workers changed from 1 to 2: that needs a restart");
  EXPECT_EQ(one(with("\"--no-huge\"]", "\"--no-huge\", \"-m\", \"512\"]")),
            "t.toml:1: dataplane.eal changed from [\"--no-huge\"] to [\"--no-huge\", \"-m\", \"512\"]: that needs a restart");
  EXPECT_EQ(one(with("max_sessions = 4096", "max_sessions = 8192")),
            "t.toml:8: nat.max_sessions changed from 4096 to 8192: that needs a restart");
  EXPECT_EQ(one(with("10.0.1.10/24", "10.0.1.10/16")),
            "t.toml:4: interface 'inside' address changed from 10.0.1.10/24 to 10.0.1.10/16: that needs a restart");
  EXPECT_EQ(one(with("iface=nat-in", "iface=nat-in2")),
            "t.toml:4: interface 'inside' device changed from \"net_af_packet0,iface=nat-in\" to "
            "\"net_af_packet0,iface=nat-in2\": that needs a restart");
  EXPECT_EQ(one(with("127.0.0.1:9100", "127.0.0.1:9200")),
            "t.toml:12: metrics.listen changed from \"127.0.0.1:9100\" to \"127.0.0.1:9200\": that needs a restart");
  EXPECT_EQ(one(with("/tmp/a.sock", "/tmp/b.sock")),
            "t.toml:14: control.socket changed from \"/tmp/a.sock\" to \"/tmp/b.sock\": that needs a restart");
}

// nat.max_sessions_per_host and max_ports_per_host: 0 or absent = no limit; no restart reason either way (a
// natgw started without one refuses it in dp::build_tables, a packet test checks).
TEST(Config, PerHostLimits) {
  const std::string base = lines({kIf1, kIf2, kIf3, kIf4, "[nat]"});  // [nat] at line 5
  const auto with_limit = [&](const char* extra) {
    auto r = load(base + extra);
    EXPECT_TRUE(r.ok()) << dump(r);
    return r.ok() ? *r.config : Config{};
  };
  const Config none = with_limit(""), zero = with_limit("max_sessions_per_host = 0\n"),
               ten = with_limit("max_sessions_per_host = 10\n");
  EXPECT_EQ(ten.nat.max_sessions_per_host, 10u);
  EXPECT_EQ(none.nat.max_sessions_per_host, 0u);
  EXPECT_EQ(zero.nat.max_sessions_per_host, 0u);
  EXPECT_TRUE(restart_reasons(ten, none).empty());
  EXPECT_TRUE(restart_reasons(none, ten).empty());
  EXPECT_TRUE(HasError(load(base + "max_sessions_per_host = -1\n"), 6,
                       "nat.max_sessions_per_host = -1 is out of range 0..2147483647"));
  // nat.max_ports_per_host: the same rules.
  const Config ports = with_limit("max_ports_per_host = 64\n");
  EXPECT_EQ(ports.nat.max_ports_per_host, 64u);
  EXPECT_EQ(ports.nat.max_sessions_per_host, 0u);
  EXPECT_EQ(none.nat.max_ports_per_host, 0u);
  EXPECT_TRUE(restart_reasons(ports, none).empty());
  EXPECT_TRUE(restart_reasons(none, ports).empty());
  EXPECT_TRUE(HasError(load(base + "max_ports_per_host = 2147483648\n"), 6,
                       "nat.max_ports_per_host = 2147483648 is out of range 0..2147483647"));
}

TEST(Config, NatEventTargets) {
  const std::string base = lines({kIf1, kIf2, kIf3, kIf4, "[nat_events]"});  // [nat_events] at line 5
  auto r = load(base + "syslog = \"10.0.0.5:514\"\nfile = \"/var/log/natgw/events.log\"\n");
  ASSERT_TRUE(r.ok()) << dump(r);
  EXPECT_EQ(r.config->nat_events.syslog_addr, 0x0a000005u);
  EXPECT_EQ(r.config->nat_events.syslog_port, 514);
  EXPECT_EQ(r.config->nat_events.file, "/var/log/natgw/events.log");
  EXPECT_TRUE(r.config->nat_events.enabled());
  EXPECT_EQ(r.config->nat_events.loc.line, 5);
  auto off = load(base + "syslog = \"\"\n");
  ASSERT_TRUE(off.ok()) << dump(off);
  EXPECT_FALSE(off.config->nat_events.enabled());
  for (const char* bad : {"logs.example.com:514", "10.0.0.5", "10.0.0.5:0", "10.0.0.5:99999", "10.0.0.5:51x4", "0.0.0.0:514"})
    EXPECT_TRUE(HasError(load(base + "syslog = \"" + bad + "\"\n"), 6, "must be an IPv4 address and a port")) << bad;
  EXPECT_TRUE(HasError(load(base + "file = \"events.log\"\n"), 6,
                       "nat_events.file \"events.log\" must be an absolute path"));
  EXPECT_TRUE(HasError(load(base + "target = \"x\"\n"), 6, "unknown key \"target\" in [nat_events]"));
  EXPECT_TRUE(restart_reasons(*r.config, *off.config).empty()) << "targets reload live";
  EXPECT_EQ(r.config->nat_events.ipfix_addr, 0u);
  auto ipfix = load(base + "ipfix = \"10.0.0.6:4739\"\nipfix_domain = 7\n");
  ASSERT_TRUE(ipfix.ok()) << dump(ipfix);
  EXPECT_EQ(ipfix.config->nat_events.ipfix_addr, 0x0a000006u);
  EXPECT_EQ(ipfix.config->nat_events.ipfix_port, 4739);
  EXPECT_EQ(ipfix.config->nat_events.ipfix_domain, 7u);
  EXPECT_TRUE(ipfix.config->nat_events.enabled()) << "IPFIX alone turns logging on";
  EXPECT_EQ(load(base + "ipfix = \"10.0.0.6:4739\"\n").config->nat_events.ipfix_domain, 1u);
  EXPECT_TRUE(HasError(load(base + "ipfix = \"collector:4739\"\n"), 6,
                       "nat_events.ipfix \"collector:4739\" must be an IPv4 address and a port, e.g. \"10.0.0.5:4739\""));
  EXPECT_TRUE(HasError(load(base + "ipfix_domain = -1\n"), 6, "nat_events.ipfix_domain = -1 is out of range 0..4294967295"));
}

TEST(ConfigErrors, MetricsListenMustBeHostPort) {
  const struct {
    const char* value;
    const char* phrase;
  } cases[] = {
      {"127.0.0.1", "must be host:port"},
      {":9100", "must be host:port"},
      {"127.0.0.1:", "port \"\" must be 1..65535"},
      {"127.0.0.1:0", "port \"0\" must be 1..65535"},
      {"127.0.0.1:65536", "port \"65536\" must be 1..65535"},
      {"127.0.0.1: 9100", "port \" 9100\" must be 1..65535"},
      {"127.0.0.1:9100-9101", "must be 1..65535"},
      {"127.0.0.256:9100", "host \"127.0.0.256\": octet 256 is over 255"},
      {"my host:9100", "must be an IPv4 address or a host name"},
  };
  for (const auto& c : cases) {
    const auto r = load(lines({kIf1, kIf2, kIf3, kIf4, "[metrics]", std::string("listen = \"") + c.value + "\""}));
    EXPECT_TRUE(HasError(r, 6, c.phrase)) << c.value;
  }
  for (const char* good : {"127.0.0.1:9100", "localhost:9100", "0.0.0.0:1", ""}) {
    const auto r = load(lines({kIf1, kIf2, kIf3, kIf4, "[metrics]", std::string("listen = \"") + good + "\""}));
    ASSERT_TRUE(r.ok()) << good << dump(r);
    EXPECT_EQ(r.config->metrics.listen, good);
  }
}

TEST(ConfigErrors, ControlSocketPathLength) {
  const auto r = load(lines({kIf1, kIf2, kIf3, kIf4, "[control]",
                             "socket = \"/run/" + std::string(110, 'x') + "\""}));
  EXPECT_TRUE(HasError(r, 6, "a unix socket path must be under 108"));
}

TEST(ConfigErrors, ManyErrorsAreReportedAtOnceInLineOrder) {
  const auto r = load(lines({
      "[dataplane]",                 // 1
      "workers = 0",                 // 2
      kIf1, kIf2, kIf3,              // 3-5
      "address = \"10.0.1.10/40\"",  // 6
      "[[route]]",                   // 7
      "prefix = \"0.0.0.0/0\"",      // 8
      "interface = \"nowhere\"",     // 9
      "[timeouts]",                  // 10
      "fragment = 0",                // 11
      "[nat]",                       // 12
      "filtering = \"address-dependent\"",  // 13
  }));
  ASSERT_FALSE(r.ok());
  EXPECT_FALSE(r.config.has_value());
  ASSERT_EQ(r.errors.size(), 5u) << dump(r);
  const int expected_lines[] = {2, 6, 9, 11, 13};
  for (size_t i = 0; i < 5; ++i) {
    EXPECT_EQ(r.errors[i].line, expected_lines[i]) << dump(r);
    EXPECT_EQ(r.errors[i].file, "t.toml");
  }
}

TEST(ConfigLoad, ShippedEc2ExampleLoads) {
  const char* src = std::getenv("NATGW_SRC");
  if (!src) GTEST_SKIP() << "NATGW_SRC is not set (meson test sets it to the source root)";
  // As shipped: it routes the example prefix list next to it (tests/unit/test_shipped_configs.py runs
  // `natgw --check` on every file in config/).
  const auto r = load_file((fs::path(src) / "config/ec2.toml").string());
  ASSERT_TRUE(r.ok()) << dump(r);
  const Config& c = *r.config;
  ASSERT_EQ(c.interfaces.size(), 3u);
  EXPECT_EQ(c.interfaces[0].mtu, 8500);
  EXPECT_EQ(c.interfaces[1].mtu, 9001);
  EXPECT_EQ(c.interfaces[2].mtu, 1500);
  for (const auto& itf : c.interfaces) EXPECT_EQ(itf.device.rfind("0000:", 0), 0u) << itf.device;
  for (const auto& arg : c.dataplane.eal) EXPECT_NE(arg, "--no-huge");
  size_t s3 = 0;
  for (const auto& rt : c.routes)
    if (!rt.prefix_list.empty()) s3 += rt.prefixes.size();
  EXPECT_EQ(s3, 22u);
  ASSERT_FALSE(c.acl.empty());
  EXPECT_EQ(c.acl[0].dst, (Prefix{0xa9fea9feu, 32}));
  EXPECT_EQ(c.metrics.listen, "127.0.0.1:9100");
}

// ---------------------------------------------------------------- helpers

TEST(ConfigParse, Ipv4) {
  EXPECT_EQ(parse_ipv4("0.0.0.0"), 0u);
  EXPECT_EQ(parse_ipv4("255.255.255.255"), 0xffffffffu);
  EXPECT_EQ(parse_ipv4("10.0.1.10"), 0x0a00010au);
  EXPECT_EQ(parse_ipv4("192.168.0.1"), 0xc0a80001u);
  for (const char* bad : {"", "1.2.3", "1.2.3.4.5", "1.2.3.4.", ".1.2.3", "1..2.3", "256.0.0.0",
                          "1.2.3.1000", "010.1.1.1", "1.2.3.00", " 1.2.3.4", "1.2.3.4 ", "+1.2.3.4",
                          "0x0a.0.0.1", "1.2.3.4/32"}) {
    EXPECT_FALSE(parse_ipv4(bad).has_value()) << '"' << bad << '"';
  }
  std::string why;
  EXPECT_FALSE(parse_ipv4("010.1.1.1", why));
  EXPECT_EQ(why, "octet \"010\" has a leading zero (octal or decimal?)");
}

TEST(ConfigParse, Prefix) {
  EXPECT_EQ(parse_prefix("0.0.0.0/0"), (Prefix{0, 0}));
  EXPECT_EQ(parse_prefix("10.0.0.0/8"), (Prefix{0x0a000000u, 8}));
  EXPECT_EQ(parse_prefix("1.2.3.4/32"), (Prefix{0x01020304u, 32}));
  EXPECT_EQ(parse_prefix("128.0.0.0/1"), (Prefix{0x80000000u, 1}));
  for (const char* bad : {"1.2.3.4/33", "1.2.3.4", "1.2.3.4/", "1.2.3.0/024", "1.2.3.0/-1", "1.2.3.0/2 4",
                          "1.0.0.0/0", "10.0.0.1/8", "010.0.0.0/8", "/8"}) {
    EXPECT_FALSE(parse_prefix(bad).has_value()) << '"' << bad << '"';
  }
  std::string why;
  EXPECT_FALSE(parse_prefix("10.1.2.3/8", why));
  EXPECT_EQ(why, "host bits 0.1.2.3 are set below the /8 mask (did you mean 10.0.0.0/8?)");
  EXPECT_FALSE(parse_prefix("1.2.3.4/33", why));
  EXPECT_EQ(why, "prefix length /33 is over 32");
}

TEST(ConfigParse, AddressWithLengthAllowsHostBits) {
  std::string why;
  const auto a = parse_address_with_length("10.0.1.10/24", why);
  ASSERT_TRUE(a.has_value()) << why;
  EXPECT_EQ(a->addr, 0x0a00010au);
  EXPECT_EQ(a->len, 24);
  EXPECT_FALSE(parse_address_with_length("10.0.1.10/33", why).has_value());
}

TEST(ConfigParse, PortRange) {
  std::string why;
  EXPECT_EQ(parse_port_range("80", why), (PortRange{80, 80}));
  EXPECT_EQ(parse_port_range("0", why), (PortRange{0, 0}));
  EXPECT_EQ(parse_port_range("1024-65535", why), (PortRange{1024, 65535}));
  EXPECT_EQ(parse_port_range("1024 - 2048", why), (PortRange{1024, 2048}));
  for (const char* bad : {"", "-", "-5", "65536", "1-", "-1-2", "a-b", "1-2-3", "100000", "80,443"})
    EXPECT_FALSE(parse_port_range(bad, why).has_value()) << '"' << bad << '"';
  EXPECT_FALSE(parse_port_range("2000-1000", why).has_value());
  EXPECT_EQ(why, "range start 2000 is above its end 1000");
}

TEST(ConfigParse, FormatAndMasks) {
  EXPECT_EQ(format_ipv4(0), "0.0.0.0");
  EXPECT_EQ(format_ipv4(0xffffffffu), "255.255.255.255");
  EXPECT_EQ(format_ipv4(0x0a00010au), "10.0.1.10");
  EXPECT_EQ(format_prefix({0, 0}), "0.0.0.0/0");
  EXPECT_EQ(format_prefix({0xa9fea9feu, 32}), "169.254.169.254/32");
  for (const char* s : {"0.0.0.0/0", "52.219.0.0/16", "3.5.0.0/19", "255.255.255.255/32"})
    EXPECT_EQ(format_prefix(*parse_prefix(s)), s);
  EXPECT_EQ(prefix_mask(0), 0u);
  EXPECT_EQ(prefix_mask(1), 0x80000000u);
  EXPECT_EQ(prefix_mask(24), 0xffffff00u);
  EXPECT_EQ(prefix_mask(32), 0xffffffffu);
  EXPECT_TRUE(contains({0x0a000000u, 8}, 0x0affffffu));
  EXPECT_FALSE(contains({0x0a000000u, 8}, 0x0b000000u));
  EXPECT_TRUE(contains({0, 0}, 0xdeadbeefu));
}

TEST(PrefixList, LoadsDirectlyWithItsOwnLineNumbers) {
  TempDir dir;
  const std::string path = dir.write("l.txt", lines({"# header", "", "  # indented comment", "1.0.0.0/8",
                                                     "2.0.0.0/8 # why", "bad", "3.0.0.0/8"}));
  std::vector<Error> errors;
  const auto ps = load_prefix_list(path, errors);
  EXPECT_EQ(ps, (std::vector<Prefix>{{0x01000000u, 8}, {0x02000000u, 8}, {0x03000000u, 8}}));
  ASSERT_EQ(errors.size(), 1u);
  EXPECT_EQ(errors[0].file, path);
  EXPECT_EQ(errors[0].line, 6);
  EXPECT_EQ(errors[0].message,
            "bad prefix \"bad\": missing prefix length: write A.B.C.D/N (/32 for a single address)");

  errors.clear();
  EXPECT_TRUE(load_prefix_list((dir.path() / "none.txt").string(), errors).empty());
  ASSERT_EQ(errors.size(), 1u);
  EXPECT_EQ(errors[0].line, 0);
  EXPECT_NE(errors[0].message.find("No such file or directory"), std::string::npos);
}

// Wrong files: a device (/dev/zero would never end; a FIFO would block a reload) is
// refused, ip-ranges.json gets one error naming the converter, and a file of bad
// lines is reported with the first 20 and a count, not 100k lines.
TEST(PrefixList, WrongFilesGiveOneClearError) {
  std::vector<Error> errors;
  EXPECT_TRUE(load_prefix_list("/dev/zero", errors).empty());
  ASSERT_EQ(errors.size(), 1u);
  EXPECT_NE(errors[0].message.find("is not a regular file"), std::string::npos) << errors[0].str();

  TempDir dir;
  errors.clear();
  const std::string json = dir.write("ip-ranges.json", "{\n  \"syncToken\": \"1\",\n  \"prefixes\": []\n}\n");
  EXPECT_TRUE(load_prefix_list(json, errors).empty());
  ASSERT_EQ(errors.size(), 1u);
  EXPECT_NE(errors[0].message.find("scripts/ip-ranges-to-prefix-list.py"), std::string::npos) << errors[0].str();

  errors.clear();
  std::string many;
  for (int i = 0; i < 1000; ++i) many += "not-a-prefix-" + std::to_string(i) + "\n";
  many += "10.0.0.0/8\n";
  const auto ps = load_prefix_list(dir.write("many.txt", many), errors);
  EXPECT_EQ(ps, (std::vector<Prefix>{{0x0a000000u, 8}}));
  ASSERT_EQ(errors.size(), 21u);
  EXPECT_EQ(errors[19].line, 20);
  EXPECT_EQ(errors[20].line, 1000);
  EXPECT_NE(errors[20].message.find("and 980 more bad lines (1000 in all"), std::string::npos) << errors[20].str();
}

}  // namespace
