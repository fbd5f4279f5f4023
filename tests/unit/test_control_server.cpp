// The control thread's sockets (natgwctl's unix socket, the metrics listener): they are
// served from the loop that also handles signals, reloads and ENA's timers, so a
// client must never hold that loop.
#include <gtest/gtest.h>

#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <vector>
#include <string>
#include <thread>

#include "control/server.hpp"

namespace natgw::control {
namespace {

using Clock = std::chrono::steady_clock;

struct TempSocket {
  std::filesystem::path dir = std::filesystem::temp_directory_path() /
                              ("natgw-ctl-test-" + std::to_string(::getpid()));
  std::string path = (dir / "sub" / "natgw.sock").string();  // "sub" does not exist yet
  ~TempSocket() { std::filesystem::remove_all(dir); }
};

int connect_unix(const std::string& path) {
  const int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  std::strncpy(a.sun_path, path.c_str(), sizeof(a.sun_path) - 1);
  if (::connect(fd, reinterpret_cast<const sockaddr*>(&a), sizeof(a)) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

// Serve until `done` is set (the client thread's reply arrived), at most `limit`.
void serve_until(ControlServer& s, const std::atomic<bool>& done, std::chrono::seconds limit) {
  const auto end = Clock::now() + limit;
  while (!done && Clock::now() < end)
    s.poll_once(50, [](const std::string& l) { return Reply{true, "you said " + l + "\n"}; },
                [] { return std::string("metric 1\n"); });
}

TEST(ControlServer, AnswersACommandAndCreatesTheSocketFolder) {
  TempSocket t;
  ControlServer s;
  s.listen_unix(t.path);  // creates dir/sub
  std::atomic<bool> done{false};
  Reply r;
  std::thread client([&] {
    r = send_command(t.path, "status");
    done = true;
  });
  serve_until(s, done, std::chrono::seconds(10));
  client.join();
  EXPECT_TRUE(r.ok);
  EXPECT_EQ(r.body, "you said status\n");
}

// listen_unix(path) must throw, saying `why`.
void expect_listen_refused(const std::string& path, const std::string& why) {
  ControlServer s;
  try {
    s.listen_unix(path);
    ADD_FAILURE() << "listened on " << path << " (expected: " << why << ")";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find(why), std::string::npos) << e.what();
  }
}

TEST(ControlServer, ASecondInstanceOnTheSameSocketIsRefused) {
  TempSocket t;
  ControlServer a;
  a.listen_unix(t.path);
  expect_listen_refused(t.path, "another natgw is already listening");
}

// A request cut off (no newline before the client stopped sending) is not run.
TEST(ControlServer, AnIncompleteRequestIsNotRun) {
  TempSocket t;
  ControlServer s;
  s.listen_unix(t.path);
  std::atomic<bool> done{false};
  std::string reply;
  std::thread client([&] {
    const int fd = connect_unix(t.path);
    (void)::send(fd, "reload", 6, MSG_NOSIGNAL);
    ::shutdown(fd, SHUT_WR);  // no newline, ever
    char buf[256];
    for (ssize_t n; (n = ::recv(fd, buf, sizeof(buf), 0)) > 0;) reply.append(buf, static_cast<size_t>(n));
    ::close(fd);
    done = true;
  });
  int ran = 0;
  const auto end = Clock::now() + std::chrono::seconds(10);
  while (!done && Clock::now() < end)
    s.poll_once(50, [&](const std::string&) { ++ran; return Reply{true, "ran\n"}; }, [] { return std::string(); });
  client.join();
  EXPECT_EQ(ran, 0);
  EXPECT_EQ(reply.rfind("ERR incomplete request", 0), 0u) << reply;
}

// A client that sends its request a byte every 200 ms (or keeps the connection open
// without a newline), and idle connections beyond the client limit: the loop never
// waits on them (each poll_once returns within its timeout), serves another client
// meanwhile, and answers the slow one "incomplete" after its 2 s budget.
TEST(ControlServer, SlowAndIdleClientsNeverHoldTheLoop) {
  TempSocket t;
  ControlServer s;
  s.listen_unix(t.path);
  std::atomic<bool> connected{false};
  std::string slow_reply;
  std::thread slow([&] {  // ends when answered or given up on (12 s at most)
    const int fd = connect_unix(t.path);
    connected = true;
    ASSERT_GE(fd, 0);
    for (int i = 0; i < 60; ++i) {
      char buf[256];
      for (ssize_t n; (n = ::recv(fd, buf, sizeof(buf), MSG_DONTWAIT)) > 0;) slow_reply.append(buf, size_t(n));
      if (!slow_reply.empty() || ::send(fd, "x", 1, MSG_NOSIGNAL) != 1) break;  // answered, or given up on
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
    ::close(fd);
  });
  while (!connected) std::this_thread::sleep_for(std::chrono::milliseconds(1));  // first in: a slot
  std::vector<int> idle;  // connected from a thread: connect() waits while the backlog is full
  std::thread idler([&] {
    for (size_t i = 0; i < ControlServer::kMaxClients + 8; ++i) idle.push_back(connect_unix(t.path));
  });
  std::atomic<bool> done{false};
  Reply r;
  double served_after = 0;
  const auto t0 = Clock::now();
  std::thread client([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(300));  // while the others hold slots
    r = send_command(t.path, "next");
    served_after = std::chrono::duration<double>(Clock::now() - t0).count();
    done = true;
  });
  double longest = 0;
  while (!done && Clock::now() < t0 + std::chrono::seconds(15)) {
    const auto a = Clock::now();
    s.poll_once(50, [](const std::string& l) { return Reply{true, "you said " + l + "\n"}; },
                [] { return std::string(); });
    longest = std::max(longest, std::chrono::duration<double>(Clock::now() - a).count());
  }
  client.join();
  EXPECT_EQ(r.body, "you said next\n");
  EXPECT_LT(served_after, 5.0) << "waited for idle clients' budgets more than twice";
  // The slow client's budget runs out: it is told so, and its slot freed.
  const auto end = Clock::now() + std::chrono::seconds(5);
  while (Clock::now() < end && s.open_clients() > 0) {
    const auto a = Clock::now();
    s.poll_once(50, [](const std::string&) { return Reply{true, ""}; }, [] { return std::string(); });
    longest = std::max(longest, std::chrono::duration<double>(Clock::now() - a).count());
  }
  slow.join();
  idler.join();
  for (int fd : idle) ::close(fd);
  EXPECT_LT(longest, 0.5) << "one poll_once held the control loop for " << longest << " s";
  EXPECT_EQ(slow_reply.rfind("ERR incomplete request", 0), 0u) << slow_reply;
}

// control.socket mistyped onto an existing file: refused, and the file is left alone.
TEST(ControlServer, AnExistingFileThatIsNotASocketIsNotReplaced) {
  TempSocket t;
  std::filesystem::create_directories(std::filesystem::path(t.path).parent_path());
  { std::ofstream(t.path) << "precious\n"; }
  expect_listen_refused(t.path, "is not a socket");
  std::ifstream f(t.path);
  std::string line;
  std::getline(f, line);
  EXPECT_EQ(line, "precious");
}

// One HTTP exchange with 127.0.0.1:port: the whole reply (empty when it cannot connect).
std::string http_get(int port, const std::string& req) {
  std::string reply;
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<const sockaddr*>(&a), sizeof(a)) == 0) {
    (void)::send(fd, req.data(), req.size(), MSG_NOSIGNAL);
    char buf[512];
    for (ssize_t n; (n = ::recv(fd, buf, sizeof(buf), 0)) > 0;) reply.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  return reply;
}

// metrics.listen accepts host names (the loader does): the listener resolves them.
TEST(ControlServer, MetricsListenResolvesAHostName) {
  ControlServer s;
  const int port = 20000 + ::getpid() % 20000;
  try {
    s.listen_http("localhost:" + std::to_string(port));
  } catch (const std::runtime_error& e) {
    GTEST_SKIP() << "cannot listen on localhost:" << port << ": " << e.what();
  }
  std::atomic<bool> done{false};
  std::string reply;
  std::thread client([&] {  // a query string is ignored
    reply = http_get(port, "GET /metrics?name[]=natgw_up HTTP/1.0\r\n\r\n"), done = true;
  });
  serve_until(s, done, std::chrono::seconds(10));
  client.join();
  EXPECT_EQ(reply.rfind("HTTP/1.0 200 OK", 0), 0u) << reply;
  EXPECT_NE(reply.find("metric 1\n"), std::string::npos) << reply;
}

// The metrics listener's answers, request by request (what http_response makes of the bytes).
TEST(HttpResponse, RoutesAndStatuses) {
  int calls = 0;
  const ControlServer::MetricsHandler m = [&] {
    ++calls;
    return std::string("natgw_up 1\n");
  };
  const auto status = [&](const std::string& req) {
    const std::string r = http_response(req, m);
    return r.substr(0, r.find("\r\n"));
  };
  EXPECT_EQ(status("GET /metrics HTTP/1.0\r\n\r\n"), "HTTP/1.0 200 OK");
  EXPECT_EQ(calls, 1);
  EXPECT_EQ(status("GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\n\r\n"), "HTTP/1.0 200 OK");
  EXPECT_EQ(status("GET /healthz HTTP/1.0\r\n\r\n"), "HTTP/1.0 200 OK");
  EXPECT_EQ(status("GET / HTTP/1.0\r\n\r\n"), "HTTP/1.0 200 OK");
  EXPECT_EQ(calls, 2);  // only /metrics renders the metrics
  EXPECT_EQ(status("GET /metricsx HTTP/1.0\r\n\r\n"), "HTTP/1.0 404 Not Found");
  EXPECT_EQ(status("GET /metrics"), "HTTP/1.0 404 Not Found");  // cut short: no path end
  EXPECT_EQ(status("POST /metrics HTTP/1.0\r\n\r\n"), "HTTP/1.0 405 Method Not Allowed");
  EXPECT_EQ(status(""), "HTTP/1.0 405 Method Not Allowed");
  EXPECT_EQ(status(std::string("GET \0/metrics HTTP/1.0", 22)), "HTTP/1.0 404 Not Found");
  // The length header matches the body.
  const std::string r = http_response("GET /metrics HTTP/1.0\r\n\r\n", m);
  const std::string body = r.substr(r.find("\r\n\r\n") + 4);
  EXPECT_EQ(body, "natgw_up 1\n");
  EXPECT_NE(r.find("Content-Length: " + std::to_string(body.size()) + "\r\n"), std::string::npos) << r;
}

// /healthz reflects the health handler: 200 "ok", or 503 with the reasons one per line; metrics are not
// rendered for it, and / stays an index.
TEST(HttpResponse, HealthzIs503WithTheReasonsWhenUnhealthy) {
  int metrics_calls = 0, health_calls = 0;
  const ControlServer::MetricsHandler m = [&] {
    ++metrics_calls;
    return std::string("natgw_up 1\n");
  };
  Reply verdict{true, "ok\n"};
  const ControlServer::HealthHandler h = [&] {
    ++health_calls;
    return verdict;
  };
  const auto body_of = [](const std::string& r) { return r.substr(r.find("\r\n\r\n") + 4); };
  std::string r = http_response("GET /healthz HTTP/1.0\r\n\r\n", m, h);
  EXPECT_EQ(r.rfind("HTTP/1.0 200 OK\r\n", 0), 0u) << r;
  EXPECT_EQ(body_of(r), "ok\n");
  verdict = Reply{false, "worker 0 (lcore 1) made no progress for 1.0 s\ninside: link down"};
  r = http_response("GET /healthz?peer=b HTTP/1.1\r\nHost: x\r\n\r\n", m, h);
  EXPECT_EQ(r.rfind("HTTP/1.0 503 Service Unavailable\r\n", 0), 0u) << r;
  const std::string body = body_of(r);
  EXPECT_EQ(body, "worker 0 (lcore 1) made no progress for 1.0 s\ninside: link down\n");
  EXPECT_NE(r.find("Content-Length: " + std::to_string(body.size()) + "\r\n"), std::string::npos) << r;
  EXPECT_EQ(http_response("GET / HTTP/1.0\r\n\r\n", m, h).rfind("HTTP/1.0 200 OK", 0), 0u);
  EXPECT_EQ(health_calls, 2);
  EXPECT_EQ(metrics_calls, 0);
  // No handler: healthy (a listener without a dataplane behind it).
  EXPECT_EQ(body_of(http_response("GET /healthz HTTP/1.0\r\n\r\n", m)), "ok\n");
}

// HEAD: what GET would answer, status and headers (Content-Length of GET's body), without the body; any
// other method is 405 and says which are allowed.
TEST(HttpResponse, HeadIsGetWithoutTheBodyAnd405SaysWhatIsAllowed) {
  const ControlServer::MetricsHandler m = [] { return std::string("natgw_up 1\n"); };
  Reply verdict{false, "inside: link down"};
  const ControlServer::HealthHandler h = [&] { return verdict; };
  const auto head_of = [](const std::string& r) { return r.substr(0, r.find("\r\n\r\n") + 4); };
  for (const char* path : {"/healthz", "/metrics", "/", "/nothing-here"}) {
    for (const bool healthy : {false, true}) {
      verdict.ok = healthy;
      const std::string get = http_response(std::string("GET ") + path + " HTTP/1.0\r\n\r\n", m, h);
      const std::string head = http_response(std::string("HEAD ") + path + " HTTP/1.0\r\n\r\n", m, h);
      EXPECT_EQ(head, head_of(get)) << path << " healthy " << healthy;
    }
  }
  verdict.ok = false;
  const std::string head = http_response("HEAD /healthz HTTP/1.1\r\nHost: x\r\n\r\n", m, h);
  EXPECT_EQ(head.rfind("HTTP/1.0 503 Service Unavailable\r\n", 0), 0u) << head;
  EXPECT_NE(head.find("\r\nContent-Length: 18\r\n"), std::string::npos) << head;  // "inside: link down\n"
  EXPECT_EQ(head.substr(head.size() - 4), "\r\n\r\n") << head;
  for (const char* req :
       {"POST /healthz HTTP/1.0\r\n\r\n", "PUT / HTTP/1.0\r\n\r\n", "HEADER / HTTP/1.0\r\n\r\n"}) {
    const std::string r = http_response(req, m, h);
    EXPECT_EQ(r.rfind("HTTP/1.0 405 Method Not Allowed\r\n", 0), 0u) << r;
    EXPECT_NE(r.find("\r\nAllow: GET, HEAD\r\n"), std::string::npos) << r;
    EXPECT_LT(r.find("\r\nAllow: "), r.find("\r\n\r\n")) << r;
  }
}

// Served by the listener: the handler poll_once was given answers /healthz.
TEST(ControlServer, HealthzOverTheListenerUsesTheHealthHandler) {
  ControlServer s;
  const int port = 20000 + (::getpid() + 7) % 20000;
  try {
    s.listen_http("127.0.0.1:" + std::to_string(port));
  } catch (const std::runtime_error& e) {
    GTEST_SKIP() << "cannot listen on 127.0.0.1:" << port << ": " << e.what();
  }
  std::atomic<bool> done{false};
  std::string reply;
  std::thread client([&] { reply = http_get(port, "GET /healthz HTTP/1.0\r\n\r\n"), done = true; });
  const auto end = Clock::now() + std::chrono::seconds(10);
  while (!done && Clock::now() < end)
    s.poll_once(
        50,
        [](const std::string&) {
          return Reply{true, ""};
        },
        [] { return std::string(); },
        [] {
          return Reply{false, "internet: link down\n"};
        });
  client.join();
  EXPECT_EQ(reply.rfind("HTTP/1.0 503 Service Unavailable", 0), 0u) << reply;
  EXPECT_EQ(reply.substr(reply.find("\r\n\r\n") + 4), "internet: link down\n");
}

}  // namespace
}  // namespace natgw::control
