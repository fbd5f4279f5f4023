// libFuzzer target: the metrics listener's request parser (control::http_response) on
// arbitrary bytes, as any host that can reach metrics.listen may send. Every answer
// must be one well-formed HTTP/1.0 response whose Content-Length is its body's size.
#include <cstdint>
#include <cstdlib>
#include <string>

#include "control/server.hpp"

namespace {

void check(bool ok) {
  if (!ok) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string req(reinterpret_cast<const char*>(data), size);
  bool rendered = false;
  // Healthy or not by the input's length: both answers of /healthz get exercised.
  const bool healthy = size % 2 == 0;
  const std::string r = natgw::control::http_response(
      req,
      [&] {
        rendered = true;
        return std::string("natgw_up 1\n");
      },
      [&] {
        return natgw::control::Reply{healthy, healthy ? "ok\n" : "inside: link down\n"};
      });
  check(r.rfind("HTTP/1.0 ", 0) == 0);
  const size_t head_end = r.find("\r\n\r\n");
  check(head_end != std::string::npos);
  const std::string body = r.substr(head_end + 4);
  // HEAD: GET's headers (its Content-Length) and no body.
  const bool head = req.rfind("HEAD ", 0) == 0;
  if (head) {
    check(body.empty());
    if (rendered)
      check(r.rfind("HTTP/1.0 200 OK", 0) == 0 && r.find("\r\nContent-Length: 11\r\n") < head_end);
    if (r.rfind("HTTP/1.0 503 ", 0) == 0) check(!healthy && r.find("\r\nContent-Length: 18\r\n") < head_end);
    return 0;
  }
  check(r.find("\r\nContent-Length: " + std::to_string(body.size()) + "\r\n") < head_end);
  // Metrics are rendered exactly for a 200 on /metrics.
  check(rendered == (body == "natgw_up 1\n" && r.rfind("HTTP/1.0 200 OK", 0) == 0));
  // 503 only for an unhealthy /healthz, and then with the reasons.
  if (r.rfind("HTTP/1.0 503 ", 0) == 0) check(!healthy && body == "inside: link down\n");
  return 0;
}
