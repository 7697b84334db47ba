// http_load: an HTTP/1.1 keep-alive load generator on Boost.Asio + Boost.Beast.
//
//   http_load HOST PORT [CONNECTIONS=50] [SECONDS=10] [RATE=0] [PATH=/]
//
// One thread, one io_context, CONNECTIONS keep-alive connections, each sending
// `GET PATH HTTP/1.1` (with a Host header) with one request in flight.
// RATE=0: closed loop, each connection sends its next request as soon as the
// response is in; a latency runs from the send.
// RATE>0: open loop, RATE requests/s in total: each connection has a fixed
// schedule, one request every CONNECTIONS/RATE seconds, the connections
// staggered over one interval. A latency runs from the *scheduled* send time
// (coordinated-omission corrected); a connection that falls behind sends at
// once (nothing is skipped), and the time it was late shows in the latency.
// Connecting is part of the run (the clock starts before the connects).
// Requests are sent until SECONDS have passed (with a RATE, requests that a
// connection behind schedule has not sent by then are not sent); responses
// still in flight then get up to 3 s to arrive, after which they count as
// errors and the program stops regardless, so it never hangs.
// Responses are read with Beast's response parser. A non-2xx response or a
// socket error counts as an error; after a socket error (or a response
// without keep-alive) the connection reconnects and goes on.
// Output, one JSON line on stdout ("requests" = 2xx responses, "seconds" =
// wall time from start until the last response, latencies of 2xx responses):
//   {"connections":..., "seconds":..., "rate":..., "requests":..., "rps":...,
//    "p50_us":..., "p90_us":..., "p99_us":..., "max_us":..., "errors":...}
#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
using clock_type = std::chrono::steady_clock;
using boost::system::error_code;

namespace {

struct run_state {
  asio::io_context ioc;
  tcp::resolver::results_type endpoints;
  std::string request;                     // the serialized GET, the same every time
  clock_type::time_point start, deadline;  // requests are scheduled before deadline only
  clock_type::duration interval{};         // per connection; zero = closed loop
  clock_type::time_point last_done;
  std::vector<std::uint32_t> latencies_us;
  std::uint64_t errors = 0;
  int running = 0;  // connections not yet finished
  bool stopping = false;
};

class connection {
 public:
  connection(run_state& s, int index, int count) : s_(s), socket_(s.ioc), timer_(s.ioc) {
    next_ = s.start + s.interval * index / count;  // staggered start (RATE>0)
  }

  void start() { connect(); }

  // Called at the hard stop: an unanswered request is an error.
  void abort() {
    if (in_flight_) ++s_.errors;
    in_flight_ = false;
    error_code ec;
    socket_.close(ec);
    timer_.cancel();
  }

 private:
  void connect() {
    buffer_.clear();
    socket_.async_connect(*s_.endpoints.begin(), [this](error_code ec) {
      if (s_.stopping) return;
      if (ec) {
        ++s_.errors;
        error_code ignored;
        socket_.close(ignored);
        // Back off a little so a refused connection does not spin.
        timer_.expires_after(std::chrono::milliseconds(10));
        timer_.async_wait([this](error_code e) {
          if (!e && !s_.stopping && !check_done()) connect();
        });
        return;
      }
      socket_.set_option(tcp::no_delay(true));
      wait_and_send();
    });
  }

  // True (and the connection is finished) once no more requests are due.
  bool check_done() {
    const bool done = clock_type::now() >= s_.deadline || (s_.interval.count() > 0 && next_ >= s_.deadline);
    if (done) finish();
    return done;
  }

  void finish() {
    if (finished_) return;
    finished_ = true;
    error_code ec;
    socket_.close(ec);
    s_.last_done = std::max(s_.last_done, clock_type::now());
    if (--s_.running == 0) s_.ioc.stop();
  }

  void wait_and_send() {
    if (check_done()) return;
    if (s_.interval.count() > 0 && clock_type::now() < next_) {
      timer_.expires_at(next_);
      timer_.async_wait([this](error_code ec) {
        if (!ec && !s_.stopping) send();
      });
    } else {
      send();
    }
  }

  void send() {
    if (s_.interval.count() > 0) {
      sent_ = next_;
      next_ += s_.interval;
    } else {
      sent_ = clock_type::now();
    }
    in_flight_ = true;
    asio::async_write(socket_, asio::buffer(s_.request), [this](error_code ec, std::size_t) {
      if (s_.stopping) return;
      if (ec) return failed();
      parser_.emplace();
      parser_->body_limit(64 * 1024 * 1024);
      http::async_read(socket_, buffer_, *parser_, [this](error_code ec, std::size_t) {
        if (s_.stopping) return;
        if (ec) return failed();
        in_flight_ = false;
        const auto& res = parser_->get();
        const unsigned status = res.result_int();
        if (status >= 200 && status < 300) {
          const auto us = std::chrono::duration_cast<std::chrono::microseconds>(clock_type::now() - sent_).count();
          s_.latencies_us.push_back(static_cast<std::uint32_t>(us));
        } else {
          ++s_.errors;
        }
        if (!res.keep_alive()) {  // the server closes: not an error, reconnect
          error_code ignored;
          socket_.close(ignored);
          if (!check_done()) connect();
          return;
        }
        wait_and_send();
      });
    });
  }

  void failed() {
    ++s_.errors;
    in_flight_ = false;
    error_code ignored;
    socket_.close(ignored);
    if (!check_done()) connect();
  }

  run_state& s_;
  tcp::socket socket_;
  asio::steady_timer timer_;
  beast::flat_buffer buffer_;
  std::optional<http::response_parser<http::string_body>> parser_;
  clock_type::time_point next_;  // scheduled time of the next request (RATE>0)
  clock_type::time_point sent_;  // start of the current request's latency
  bool in_flight_ = false;
  bool finished_ = false;
};

int usage() {
  std::cerr << "usage: http_load HOST PORT [CONNECTIONS=50] [SECONDS=10] [RATE=0] [PATH=/]\n";
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3 || argc > 7) return usage();
  const std::string host = argv[1];
  const std::string port = argv[2];
  const int connections = argc > 3 ? std::atoi(argv[3]) : 50;
  const double seconds = argc > 4 ? std::atof(argv[4]) : 10.0;
  const double rate = argc > 5 ? std::atof(argv[5]) : 0.0;
  const std::string path = argc > 6 ? argv[6] : "/";
  if (connections <= 0 || connections > 100000 || !(seconds > 0 && seconds <= 3600) || !(rate >= 0) ||
      path.empty() || path[0] != '/')
    return usage();

  run_state s;
  try {
    s.endpoints = tcp::resolver(s.ioc).resolve(host, port);
  } catch (const std::exception& e) {
    std::cerr << "http_load: cannot resolve " << host << ":" << port << ": " << e.what() << "\n";
    return 2;
  }
  s.request = "GET " + path + " HTTP/1.1\r\nHost: " + host + ":" + port + "\r\n\r\n";
  if (rate > 0)
    s.interval = std::chrono::duration_cast<clock_type::duration>(std::chrono::duration<double>(connections / rate));
  s.latencies_us.reserve(1 << 20);
  s.start = s.last_done = clock_type::now();
  s.deadline = s.start + std::chrono::duration_cast<clock_type::duration>(std::chrono::duration<double>(seconds));

  std::vector<std::unique_ptr<connection>> conns;
  for (int i = 0; i < connections; ++i) conns.push_back(std::make_unique<connection>(s, i, connections));
  s.running = connections;
  for (auto& c : conns) c->start();

  // Hard stop: 3 s after the deadline whatever is still in flight is an error.
  asio::steady_timer hard_stop(s.ioc);
  hard_stop.expires_at(s.deadline + std::chrono::seconds(3));
  hard_stop.async_wait([&](error_code ec) {
    if (ec) return;
    s.stopping = true;
    for (auto& c : conns) c->abort();
    s.last_done = clock_type::now();
    s.ioc.stop();
  });
  s.ioc.run();

  const double elapsed = std::chrono::duration<double>(s.last_done - s.start).count();
  auto& all = s.latencies_us;
  std::sort(all.begin(), all.end());
  auto percentile = [&all](double p) -> std::uint32_t {
    if (all.empty()) return 0;
    return all[static_cast<std::size_t>(p * static_cast<double>(all.size() - 1) + 0.5)];
  };
  std::printf(
      "{\"connections\": %d, \"seconds\": %.3f, \"rate\": %.1f, \"requests\": %zu, \"rps\": %.1f, "
      "\"p50_us\": %u, \"p90_us\": %u, \"p99_us\": %u, \"max_us\": %u, \"errors\": %llu}\n",
      connections, elapsed, rate, all.size(), elapsed > 0 ? static_cast<double>(all.size()) / elapsed : 0.0,
      percentile(0.50), percentile(0.90), percentile(0.99), all.empty() ? 0u : all.back(),
      static_cast<unsigned long long>(s.errors));
  std::fflush(stdout);
  return all.empty() ? 1 : 0;
}
