// IPv4 address/prefix parsing and prefix-list files (control path).
#include "config/config.hpp"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string_view>

namespace natgw::config {

namespace {

constexpr std::string_view kIpv4Shape = "expected an IPv4 address of four dotted numbers like 10.0.0.1";

bool all_digits(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

uint32_t to_number(std::string_view digits) {
  uint32_t v = 0;
  for (char c : digits) v = v * 10 + static_cast<uint32_t>(c - '0');
  return v;
}

std::string_view trim(std::string_view s) {
  const auto first = s.find_first_not_of(" \t\r");
  if (first == std::string_view::npos) return {};
  const auto last = s.find_last_not_of(" \t\r");
  return s.substr(first, last - first + 1);
}

}  // namespace

std::optional<uint32_t> parse_ipv4(const std::string& s, std::string& why) {
  uint32_t addr = 0;
  size_t start = 0;
  for (int i = 0; i < 4; ++i) {
    const size_t end = i < 3 ? s.find('.', start) : s.size();
    if (end == std::string::npos) {
      why = kIpv4Shape;
      return std::nullopt;
    }
    const std::string_view part(s.data() + start, end - start);
    if (part.size() > 3 || !all_digits(part)) {
      why = kIpv4Shape;
      return std::nullopt;
    }
    // inet_aton would read "010" as octal 8: refuse rather than guess.
    if (part.size() > 1 && part[0] == '0') {
      why = "octet \"" + std::string(part) + "\" has a leading zero (octal or decimal?)";
      return std::nullopt;
    }
    const uint32_t octet = to_number(part);
    if (octet > 255) {
      why = "octet " + std::string(part) + " is over 255";
      return std::nullopt;
    }
    addr = addr << 8 | octet;
    start = end + 1;
  }
  return addr;
}

std::optional<uint32_t> parse_ipv4(const std::string& s) {
  std::string why;
  return parse_ipv4(s, why);
}

std::optional<AddressWithLength> parse_address_with_length(const std::string& s, std::string& why) {
  const size_t slash = s.find('/');
  if (slash == std::string::npos) {
    why = "missing prefix length: write A.B.C.D/N (/32 for a single address)";
    return std::nullopt;
  }
  const auto addr = parse_ipv4(s.substr(0, slash), why);
  if (!addr) return std::nullopt;
  const std::string_view len(s.data() + slash + 1, s.size() - slash - 1);
  if (len.size() > 2 || !all_digits(len) || (len.size() > 1 && len[0] == '0')) {
    why = "prefix length \"" + std::string(len) + "\" is not a number 0..32";
    return std::nullopt;
  }
  const uint32_t n = to_number(len);
  if (n > 32) {
    why = "prefix length /" + std::to_string(n) + " is over 32";
    return std::nullopt;
  }
  return AddressWithLength{*addr, static_cast<uint8_t>(n)};
}

std::optional<Prefix> parse_prefix(const std::string& s, std::string& why) {
  const auto a = parse_address_with_length(s, why);
  if (!a) return std::nullopt;
  const uint32_t mask = prefix_mask(a->len);
  if (const uint32_t host = a->addr & ~mask) {
    const Prefix fixed{a->addr & mask, a->len};
    why = "host bits " + format_ipv4(host) + " are set below the /" + std::to_string(a->len) +
          " mask (did you mean " + format_prefix(fixed) + "?)";
    return std::nullopt;
  }
  return Prefix{a->addr, a->len};
}

std::optional<Prefix> parse_prefix(const std::string& s) {
  std::string why;
  return parse_prefix(s, why);
}

std::optional<PortRange> parse_port_range(const std::string& s, std::string& why) {
  const auto port = [](std::string_view t) -> std::optional<uint16_t> {
    if (t.size() > 5 || !all_digits(t) || to_number(t) > 65535) return std::nullopt;
    return static_cast<uint16_t>(to_number(t));
  };
  const size_t dash = s.find('-', 1);  // from 1: "-5" is a bad number, not a range
  const std::string_view lo_s = trim(std::string_view(s).substr(0, dash));
  const std::string_view hi_s = dash == std::string::npos ? lo_s : trim(std::string_view(s).substr(dash + 1));
  const auto lo = port(lo_s);
  const auto hi = port(hi_s);
  if (!lo || !hi) {
    why = "expected a port \"N\" or a range \"A-B\" of ports 0..65535";
    return std::nullopt;
  }
  if (*lo > *hi) {
    why = "range start " + std::to_string(*lo) + " is above its end " + std::to_string(*hi);
    return std::nullopt;
  }
  return PortRange{*lo, *hi};
}

std::string format_ipv4(uint32_t a) {
  return std::to_string(a >> 24) + "." + std::to_string((a >> 16) & 0xff) + "." +
         std::to_string((a >> 8) & 0xff) + "." + std::to_string(a & 0xff);
}

std::string format_prefix(const Prefix& p) { return format_ipv4(p.addr) + "/" + std::to_string(p.len); }

namespace {
constexpr uintmax_t kMaxTextFile = uintmax_t{64} << 20;
constexpr size_t kMaxListErrors = 20;  // a wrong file (ip-ranges.json) gives one per line otherwise
}  // namespace

std::optional<std::string> read_text_file(const std::string& path, std::string& why) {
  std::error_code ec;
  const auto st = std::filesystem::status(path, ec);
  if (ec) {
    why = ec.message();
    return std::nullopt;
  }
  // ifstream "opens" a directory and then reads nothing: say what it is instead.
  if (std::filesystem::is_directory(st)) {
    why = "is a directory";
    return std::nullopt;
  }
  // A device or a FIFO could block the control thread (a reload) forever, or never end
  // (/dev/zero); config files and prefix lists are files.
  if (!std::filesystem::is_regular_file(st)) {
    why = "is not a regular file";
    return std::nullopt;
  }
  if (const auto size = std::filesystem::file_size(path, ec); !ec && size > kMaxTextFile) {
    why = "is " + std::to_string(size >> 20) + " MB: more than the " + std::to_string(kMaxTextFile >> 20) +
          " MB a config file or prefix list may have";
    return std::nullopt;
  }
  errno = 0;
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    why = errno ? std::strerror(errno) : "cannot open";
    return std::nullopt;
  }
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) {
    why = "read error";
    return std::nullopt;
  }
  return std::move(text).str();
}

std::vector<Prefix> load_prefix_list(const std::string& path, std::vector<Error>& errors) {
  std::string why;
  const auto text = read_text_file(path, why);
  if (!text) {
    errors.push_back({path, 0, "cannot read prefix list " + path + ": " + why});
    return {};
  }
  // ip-ranges.json itself is the natural mistake: name the converter instead of erring on every line.
  if (const auto first = text->find_first_not_of(" \t\r\n"); first != std::string::npos && (*text)[first] == '{') {
    errors.push_back({path, 1, "this looks like JSON (AWS's ip-ranges.json?), not a prefix list: convert it with "
                               "scripts/ip-ranges-to-prefix-list.py"});
    return {};
  }
  std::vector<Prefix> out;
  std::map<std::pair<uint32_t, uint8_t>, int> first_line;
  std::istringstream in(*text);
  std::string raw;
  size_t bad = 0;
  int last_bad = 0;
  const auto report = [&](int line, std::string message) {
    last_bad = line;
    if (++bad <= kMaxListErrors) errors.push_back({path, line, std::move(message)});
  };
  for (int line = 1; std::getline(in, raw); ++line) {
    const std::string entry(trim(std::string_view(raw).substr(0, raw.find('#'))));
    if (entry.empty()) continue;
    const auto p = parse_prefix(entry, why);
    if (!p) {
      report(line, "bad prefix \"" + entry + "\": " + why);
      continue;
    }
    const auto [it, fresh] = first_line.try_emplace({p->addr, p->len}, line);
    if (!fresh) {
      report(line, "duplicate prefix " + entry + " (first at line " + std::to_string(it->second) + ")");
      continue;
    }
    out.push_back(*p);
  }
  if (bad > kMaxListErrors)
    errors.push_back({path, last_bad, "... and " + std::to_string(bad - kMaxListErrors) + " more bad lines (" +
                                          std::to_string(bad) + " in all, the last at this line; the first " +
                                          std::to_string(kMaxListErrors) + " are listed)"});
  return out;
}

}  // namespace natgw::config
