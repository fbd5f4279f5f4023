// libFuzzer target: the config loader on arbitrary TOML text. It must never crash
// and never throw: every problem is an Error with a file:line in the LoadResult,
// and a result is either a config or errors, never both or neither.
#include <cstdint>
#include <cstdlib>
#include <string>

#include "config/config.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  try {
    // Prefix lists named relative to the config resolve into the shipped config folder.
    const auto r = natgw::config::load_string(text, "fuzz.toml", NATGW_FUZZ_CONFIG_DIR);
    if (r.ok() == !r.errors.empty()) std::abort();
    for (const auto& e : r.errors)
      if (e.message.empty() || e.str().empty()) std::abort();
    if (r.ok()) {
      const auto& c = *r.config;
      if (c.interfaces.empty()) std::abort();
      for (const auto& rt : c.routes)
        if (rt.interface_index >= c.interfaces.size()) std::abort();
    }
  } catch (...) {
    std::abort();  // the loader reports errors, it does not throw them
  }
  return 0;
}
