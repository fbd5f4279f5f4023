// Context built from a config: the local-address set every packet consults
// (is_local: interface and pool addresses, a hash probe instead of a scan).
#include <gtest/gtest.h>

#include <rte_byteorder.h>

#include <algorithm>
#include <string>

#include "config/config.hpp"
#include "dataplane/context.hpp"

namespace natgw::dp {
namespace {

std::string config_with_pool(unsigned pool) {
  std::string t = R"(
[[interface]]
name = "inside"
device = "net_null0"
address = "10.0.1.10/24"
[[interface]]
name = "internet"
device = "net_null1"
address = "10.0.3.10/24"
[[route]]
prefix = "0.0.0.0/0"
via = "10.0.3.1"
interface = "internet"
[[snat]]
from = ["192.168.0.0/16"]
)";
  if (pool) {
    t += "to = [";
    for (unsigned i = 0; i < pool; ++i)
      t += (i ? ", \"" : "\"") + std::string("100.64.") + std::to_string(i / 200) + "." + std::to_string(1 + i % 200) + "\"";
    t += "]\n";
  }
  return t;
}

TEST(Context, IsLocalHoldsExactlyTheInterfaceAndPoolAddresses) {
  for (unsigned pool : {0u, 3u, 200u}) {
    auto r = config::load_string(config_with_pool(pool), "test.toml");
    ASSERT_TRUE(r.ok()) << (r.errors.empty() ? "" : r.errors[0].str());
    Context ctx;
    init_context(ctx, *r.config);
    ASSERT_EQ(ctx.local.size(), 2u + pool);
    for (rte_be32_t a : ctx.local) EXPECT_TRUE(ctx.is_local(a)) << pool;
    EXPECT_TRUE(ctx.is_local(rte_cpu_to_be_32(0x0a00010a)));
    EXPECT_TRUE(ctx.is_local(rte_cpu_to_be_32(0x0a00030a)));
    EXPECT_FALSE(ctx.is_local(0));
    EXPECT_FALSE(ctx.is_local(rte_cpu_to_be_32(0x0a000301)));  // the gateway, on link
    // Every other address of the pool's /16 and of the links, and a spread of others.
    unsigned checked = 0;
    for (uint32_t a = 0x64400000; a < 0x64410000; ++a) {
      const rte_be32_t be = rte_cpu_to_be_32(a);
      const bool want = std::find(ctx.local.begin(), ctx.local.end(), be) != ctx.local.end();
      ASSERT_EQ(ctx.is_local(be), want) << std::hex << a;
      ++checked;
    }
    for (uint32_t x = 1; x < 200000; ++x) {
      const rte_be32_t be = x * 2654435761u;
      const bool want = std::find(ctx.local.begin(), ctx.local.end(), be) != ctx.local.end();
      ASSERT_EQ(ctx.is_local(be), want) << std::hex << be;
    }
    EXPECT_EQ(checked, 65536u);
    EXPECT_GE(ctx.local_slots.size(), 2 * ctx.local.size());  // at most half full: probes stay short
  }
}

// What the session tables would refuse at startup is refused by init_context with
// the [[snat]] rule's line, so `natgw --check` (which runs it without DPDK) catches it.
TEST(Context, RefusesTooManyOutsideAddressesAtTheRule) {
  auto ok = config::load_string(config_with_pool(253), "test.toml");  // 2 interfaces + 253 = 255
  ASSERT_TRUE(ok.ok());
  Context a;
  EXPECT_NO_THROW(init_context(a, *ok.config));
  auto r = config::load_string(config_with_pool(254), "test.toml");
  ASSERT_TRUE(r.ok());
  Context b;
  try {
    init_context(b, *r.config);
    ADD_FAILURE() << "256 outside addresses accepted";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("test.toml:14: at most 255 outside addresses"), std::string::npos)
        << e.what();
  }
}

TEST(Context, RefusesAPortRangeSmallerThanTheWorkers) {
  const auto with = [](unsigned workers, const char* ports) {
    return "[dataplane]\nworkers = " + std::to_string(workers) + "\n" + config_with_pool(1) + "ports = \"" +
           ports + "\"\n";
  };
  auto fits = config::load_string(with(4, "2000-2003"), "test.toml");
  ASSERT_TRUE(fits.ok()) << (fits.errors.empty() ? "" : fits.errors[0].str());
  Context a;
  EXPECT_NO_THROW(init_context(a, *fits.config));
  auto small = config::load_string(with(4, "2000-2002"), "test.toml");
  ASSERT_TRUE(small.ok());
  Context b;
  try {
    init_context(b, *small.config);
    ADD_FAILURE() << "3 ports for 4 workers accepted";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("test.toml:16: port range 2000-2002 of 100.64.0.1 has fewer ports than the 4 workers"),
              std::string::npos)
        << e.what();
  }
}

}  // namespace
}  // namespace natgw::dp
