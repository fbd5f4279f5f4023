// Reading an EAL device string ("net_memif0,role=client,socket=/run/m.sock"): the driver
// name before the first comma, then key=value devargs.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace natgw::config {

// The value of devarg `key` in `device`, or nullopt when the string does not set it.
inline std::optional<std::string> device_arg(std::string_view device, std::string_view key) {
  for (size_t at = device.find(','); at != std::string_view::npos;) {
    const size_t end = device.find(',', at + 1);
    const std::string_view kv = device.substr(at + 1, end == std::string_view::npos ? end : end - at - 1);
    if (kv.size() > key.size() && kv.substr(0, key.size()) == key && kv[key.size()] == '=')
      return std::string(kv.substr(key.size() + 1));
    at = end;
  }
  return std::nullopt;
}

}  // namespace natgw::config
