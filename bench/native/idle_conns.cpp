// idle_conns: holds many idle keep-alive HTTP connections open on a server.
//
//   idle_conns HOST PORT COUNT SECONDS
//
// Raises RLIMIT_NOFILE to what COUNT connections need, then (one thread, one
// io_context, at most 256 steps at a time):
//   1. opens COUNT TCP connections, sends `GET / HTTP/1.1` on each and reads
//      the response (Beast parser), so each is a real keep-alive connection;
//      then prints `ready N` (N = connections answered) on stdout, flushed;
//   2. holds them idle for SECONDS;
//   3. sends one more GET on each connection still open and reads the answer.
// Every step (connect + request + response) has a 10 s timeout, so the
// program always ends by itself. Output, one JSON line on stdout:
//   {"count":..., "opened":..., "answered_first":..., "answered_last":..., "errors":...}
// "answered" means a 2xx response; a failed connect, a socket error, a
// timeout or a non-2xx response counts as one error.
#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <iostream>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
using boost::system::error_code;

namespace {

const int kConcurrency = 256;                    // steps in progress at a time
const auto kStepTimeout = std::chrono::seconds(10);

struct connection {
  explicit connection(asio::io_context& ioc) : socket(ioc), timer(ioc) {}
  tcp::socket socket;
  asio::steady_timer timer;
  beast::flat_buffer buffer;
  std::optional<http::response_parser<http::string_body>> parser;
  bool open = false;
  bool busy = false;  // a step is in progress (the timeout applies)
};

class prober {
 public:
  prober(asio::io_context& ioc, tcp::endpoint endpoint, std::string request, int count)
      : endpoint_(endpoint), request_(std::move(request)) {
    for (int i = 0; i < count; ++i) conns_.push_back(std::make_unique<connection>(ioc));
  }

  // Runs one step (connect if needed, GET, read the response) on every
  // connection, kConcurrency at a time; calls done() when all have finished.
  void run_phase(bool first, std::function<void()> done) {
    first_ = first;
    done_ = std::move(done);
    next_ = 0;
    active_ = 0;
    launch();
  }

  int opened = 0, answered_first = 0, answered_last = 0, errors = 0;

 private:
  void launch() {
    while (active_ < kConcurrency && next_ < conns_.size()) {
      connection& c = *conns_[next_++];
      if (!first_ && !c.open) continue;  // lost in step 1, already counted
      ++active_;
      c.busy = true;
      c.timer.expires_after(kStepTimeout);
      c.timer.async_wait([&c](error_code ec) {
        if (!ec && c.busy) c.socket.close(ec);  // timed out: the pending operation fails
      });
      if (first_) {
        c.socket.async_connect(endpoint_, [this, &c](error_code ec) {
          if (ec) return step_done(c, false);
          ++opened;
          c.open = true;
          c.socket.set_option(tcp::no_delay(true), ec);
          request(c);
        });
      } else {
        request(c);
      }
    }
    if (active_ == 0 && next_ == conns_.size() && done_) {
      auto done = std::move(done_);
      done_ = nullptr;
      done();
    }
  }

  void request(connection& c) {
    asio::async_write(c.socket, asio::buffer(request_), [this, &c](error_code ec, std::size_t) {
      if (ec) return step_done(c, false);
      c.parser.emplace();
      http::async_read(c.socket, c.buffer, *c.parser, [this, &c](error_code ec, std::size_t) {
        if (ec) return step_done(c, false);
        const unsigned status = c.parser->get().result_int();
        step_done(c, status >= 200 && status < 300);
      });
    });
  }

  void step_done(connection& c, bool answered) {
    c.busy = false;
    c.timer.cancel();
    if (answered) {
      ++(first_ ? answered_first : answered_last);
    } else {
      ++errors;
      error_code ec;
      c.socket.close(ec);
      c.open = false;
    }
    --active_;
    launch();
  }

  tcp::endpoint endpoint_;
  std::string request_;
  std::vector<std::unique_ptr<connection>> conns_;
  bool first_ = true;
  std::size_t next_ = 0;
  int active_ = 0;
  std::function<void()> done_;
};

void raise_nofile(int count) {
  rlimit lim{};
  getrlimit(RLIMIT_NOFILE, &lim);
  const rlim_t need = static_cast<rlim_t>(count) + 64;
  if (lim.rlim_cur >= need) return;
  lim.rlim_cur = need;
  if (lim.rlim_max < need) lim.rlim_max = need;  // needs root (CAP_SYS_RESOURCE)
  if (setrlimit(RLIMIT_NOFILE, &lim) != 0) std::perror("idle_conns: setrlimit(RLIMIT_NOFILE)");
}

int usage() {
  std::cerr << "usage: idle_conns HOST PORT COUNT SECONDS\n";
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 5) return usage();
  const std::string host = argv[1];
  const std::string port = argv[2];
  const int count = std::atoi(argv[3]);
  const double seconds = std::atof(argv[4]);
  if (count <= 0 || count > 1000000 || !(seconds >= 0 && seconds <= 86400)) return usage();
  raise_nofile(count);

  asio::io_context ioc(1);
  tcp::endpoint endpoint;
  try {
    endpoint = *tcp::resolver(ioc).resolve(host, port).begin();
  } catch (const std::exception& e) {
    std::cerr << "idle_conns: cannot resolve " << host << ":" << port << ": " << e.what() << "\n";
    return 2;
  }
  prober p(ioc, endpoint, "GET / HTTP/1.1\r\nHost: " + host + ":" + port + "\r\n\r\n", count);
  asio::steady_timer idle(ioc);
  p.run_phase(true, [&] {
    std::printf("ready %d\n", p.answered_first);
    std::fflush(stdout);
    idle.expires_after(std::chrono::duration_cast<asio::steady_timer::duration>(std::chrono::duration<double>(seconds)));
    idle.async_wait([&](error_code) { p.run_phase(false, [] {}); });
  });
  ioc.run();

  std::printf("{\"count\": %d, \"opened\": %d, \"answered_first\": %d, \"answered_last\": %d, \"errors\": %d}\n", count,
              p.opened, p.answered_first, p.answered_last, p.errors);
  std::fflush(stdout);
  return 0;
}
