#include "server.hpp"

#include "exit_deadline.hpp"
#include "http/connection.hpp"

#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cstdio>
#include <string>
#include <thread>

using namespace baseplate;

namespace {

/// Echoes the method, target and body; "/stream" answers in two pieces.
class echo_handler final : public http::handler {
 public:
  void handle(std::shared_ptr<http::exchange> ex) override { read_more(ex, std::make_shared<std::string>()); }

 private:
  static void read_more(std::shared_ptr<http::exchange> ex, std::shared_ptr<std::string> body) {
    ex->read_body(0, [ex, body](boost::system::error_code ec, std::string_view data) {
      if (ec) return ex->abort();
      if (!data.empty()) {
        body->append(data);
        return read_more(ex, body);
      }
      const auto& r = ex->req();
      if (r.target == "/stream") {
        http::response_part first;
        first.head = http::response_head{200, {}, {{"Content-Type", "text/plain"}}};
        first.body = "one,";
        ex->write(std::move(first), [ex](boost::system::error_code) {
          http::response_part second;
          second.body = "two";
          second.last = true;
          ex->write(std::move(second), nullptr);
        });
        return;
      }
      http::response_part p;
      p.head = http::response_head{200, {}, {{"Content-Type", "text/plain"}}};
      p.body = r.method + " " + r.target + " " + *body;
      p.last = true;
      ex->write(std::move(p), nullptr);
    });
  }
};

class server_fixture : public ::testing::Test {
 protected:
  void SetUp() override {
    opts_.header_timeout = std::chrono::milliseconds(2000);
    opts_.stop_timeout = std::chrono::milliseconds(5000);
    opts_.max_header_size = 1024;
    opts_.max_body_size = 1000;
    srv_ = std::make_unique<server>(opts_, [this](stream_socket s, io_thread& t) -> std::shared_ptr<connection_base> {
      return std::make_shared<http::connection>(std::move(s), t, handler_, srv_->options());
    });
    int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
    ASSERT_EQ(::listen(fd, 64), 0);
    socklen_t len = sizeof a;
    ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
    port_ = ntohs(a.sin_port);
    srv_->adopt_listener(fd);
    ::close(fd);
    srv_->start();
  }
  void TearDown() override {
    srv_->stop();
    srv_->join();
  }

  int connect_client() {
    int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons(port_);
    EXPECT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
    timeval tv{5, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    return fd;
  }

  static void send_all(int fd, const std::string& s) { ASSERT_EQ(::send(fd, s.data(), s.size(), 0), (ssize_t)s.size()); }

  /// Reads until `count` occurrences of `marker` arrived, or EOF/timeout.
  static std::string read_until(int fd, const std::string& marker, int count = 1) {
    std::string got;
    char buf[4096];
    auto occurrences = [&] {
      int n = 0;
      for (auto p = got.find(marker); p != std::string::npos; p = got.find(marker, p + 1)) ++n;
      return n;
    };
    while (occurrences() < count) {
      ssize_t n = ::recv(fd, buf, sizeof buf, 0);
      if (n <= 0) break;
      got.append(buf, static_cast<std::size_t>(n));
    }
    return got;
  }

  static std::string read_all(int fd) { return read_until(fd, "\x01\x02never", 1); }

  server_options opts_;
  echo_handler handler_;
  std::unique_ptr<server> srv_;
  std::uint16_t port_ = 0;
};

}  // namespace

TEST_F(server_fixture, answers_a_get_with_content_length) {
  int fd = connect_client();
  send_all(fd, "GET /hello?x=1 HTTP/1.1\r\nHost: a\r\n\r\n");
  auto r = read_until(fd, "GET /hello?x=1 ");
  EXPECT_NE(r.find("HTTP/1.1 200 OK\r\n"), std::string::npos) << r;
  EXPECT_NE(r.find("Content-Length: 15\r\n"), std::string::npos) << r;
  ::close(fd);
}

TEST_F(server_fixture, keeps_alive_and_answers_pipelined_requests_in_order) {
  int fd = connect_client();
  send_all(fd,
           "GET /1 HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\n\r\n"
           "POST /3 HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc");
  auto r = read_until(fd, "HTTP/1.1 200", 3);
  auto p1 = r.find("GET /1 "), p2 = r.find("GET /2 "), p3 = r.find("POST /3 abc");
  ASSERT_NE(p1, std::string::npos) << r;
  ASSERT_NE(p2, std::string::npos) << r;
  ASSERT_NE(p3, std::string::npos) << r;
  EXPECT_LT(p1, p2);
  EXPECT_LT(p2, p3);
  ::close(fd);
}

TEST_F(server_fixture, reads_a_chunked_request_body) {
  int fd = connect_client();
  send_all(fd, "POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n");
  auto r = read_until(fd, "POST /c abcde");
  EXPECT_NE(r.find("POST /c abcde"), std::string::npos) << r;
  ::close(fd);
}

TEST_F(server_fixture, streams_a_response_with_chunked_coding) {
  int fd = connect_client();
  send_all(fd, "GET /stream HTTP/1.1\r\nHost: a\r\n\r\n");
  auto r = read_until(fd, "0\r\n\r\n");
  EXPECT_NE(r.find("Transfer-Encoding: chunked\r\n"), std::string::npos) << r;
  EXPECT_NE(r.find("4\r\none,\r\n3\r\ntwo\r\n0\r\n\r\n"), std::string::npos) << r;
  ::close(fd);
}

TEST_F(server_fixture, http10_gets_a_close_delimited_stream) {
  int fd = connect_client();
  send_all(fd, "GET /stream HTTP/1.0\r\n\r\n");
  auto r = read_all(fd);
  EXPECT_EQ(r.find("HTTP/1.0 200 OK\r\n"), 0u) << r;
  EXPECT_EQ(r.find("chunked"), std::string::npos) << r;
  EXPECT_NE(r.find("\r\n\r\none,two"), std::string::npos) << r;
  ::close(fd);
}

TEST_F(server_fixture, rejects_garbage_with_400_and_closes) {
  int fd = connect_client();
  send_all(fd, "THIS IS NOT HTTP\r\n\r\n");
  auto r = read_all(fd);
  EXPECT_EQ(r.find("HTTP/1.1 400 Bad Request\r\n"), 0u) << r;
  EXPECT_NE(r.find("Connection: close"), std::string::npos) << r;
  ::close(fd);
}

TEST_F(server_fixture, rejects_a_huge_header_with_431) {
  int fd = connect_client();
  send_all(fd, "GET / HTTP/1.1\r\nX-Big: " + std::string(4000, 'a') + "\r\n\r\n");
  auto r = read_all(fd);
  EXPECT_EQ(r.find("HTTP/1.1 431"), 0u) << r;
  ::close(fd);
}

TEST_F(server_fixture, rejects_a_body_over_the_limit_with_413) {
  int fd = connect_client();
  send_all(fd, "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5000\r\n\r\n");
  auto r = read_all(fd);
  EXPECT_EQ(r.find("HTTP/1.1 413"), 0u) << r;
  ::close(fd);
}

TEST_F(server_fixture, head_gets_no_body) {
  int fd = connect_client();
  send_all(fd, "HEAD /h HTTP/1.1\r\nHost: a\r\n\r\nGET /after HTTP/1.1\r\nHost: a\r\n\r\n");
  auto r = read_until(fd, "GET /after ");
  EXPECT_EQ(r.find("HEAD /h"), std::string::npos) << r;  // no body bytes for HEAD
  EXPECT_NE(r.find("Content-Length: 8\r\n"), std::string::npos) << r;
  EXPECT_NE(r.find("GET /after "), std::string::npos) << r;
  ::close(fd);
}

TEST_F(server_fixture, graceful_stop_closes_idle_connections) {
  int fd = connect_client();
  send_all(fd, "GET /1 HTTP/1.1\r\nHost: a\r\n\r\n");
  read_until(fd, "GET /1 ");
  EXPECT_EQ(srv_->stop(), 0u);
  char c;
  EXPECT_EQ(::recv(fd, &c, 1, 0), 0);  // closed by the server
  ::close(fd);
}

// SIGHUP is a stop signal, reported like SIGTERM, never the default kill.
TEST_F(server_fixture, sighup_is_a_stop_event) {
  ::raise(SIGHUP);
  auto ev = srv_->wait_events(5000);
  EXPECT_TRUE(ev.stop);
  EXPECT_EQ(ev.stop_signal, SIGHUP);
}

// Routed signals reach a thread of the host's own: SIGUSR1 only there, a
// stop signal there and in the events; join() releases the thread.
TEST(server_signals, route_to_a_waiting_thread) {
  echo_handler h;
  std::unique_ptr<server> srv;
  srv = std::make_unique<server>(server_options{}, [&](stream_socket s, io_thread& t) -> std::shared_ptr<connection_base> {
    return std::make_shared<http::connection>(std::move(s), t, h, srv->options());
  });
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  ASSERT_EQ(::listen(fd, 8), 0);
  srv->adopt_listener(fd);
  ::close(fd);
  srv->route_signals_to_waiter();
  srv->start();
  EXPECT_EQ(srv->wait_signal(10), 0);
  ::raise(SIGUSR1);
  ::raise(SIGUSR1);  // while the first is pending: one dump answers both
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  EXPECT_EQ(srv->wait_signal(5000), SIGUSR1);
  EXPECT_EQ(srv->wait_signal(100), 0);
  EXPECT_FALSE(srv->take_events().dump);
  ::raise(SIGTERM);
  EXPECT_EQ(srv->wait_signal(5000), SIGTERM);
  auto ev = srv->wait_events(5000);
  EXPECT_TRUE(ev.stop);
  EXPECT_EQ(ev.stop_signal, SIGTERM);
  std::thread waiting([&] { EXPECT_EQ(srv->wait_signal(-1), -1); });
  srv->stop();
  srv->join();
  waiting.join();
}

// A second stop signal during the stop reaches the host (to cut it short).
TEST_F(server_fixture, reports_a_second_signal_during_a_stop) {
  ::raise(SIGTERM);
  auto first = srv_->wait_events(5000);
  ASSERT_TRUE(first.stop);
  srv_->begin_stop();
  ::raise(SIGINT);
  server_events second;
  for (int i = 0; i < 50 && !second.stop; ++i) second = srv_->wait_events(100);
  EXPECT_TRUE(second.stop);
  EXPECT_EQ(second.stop_signal, SIGINT);
}

// In a stop, the last connection closing wakes a host waiting on event_fd().
TEST_F(server_fixture, the_last_close_of_a_stop_wakes_the_host) {
  int fd = connect_client();
  for (int i = 0; i < 200 && srv_->stats().open_connections == 0; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  ASSERT_EQ(srv_->stats().open_connections, 1u);
  srv_->begin_stop();
  srv_->take_events();  // nothing pending now
  ::close(fd);          // the client goes: its connection closes, the last one
  pollfd p{srv_->event_fd(), POLLIN, 0};
  EXPECT_EQ(::poll(&p, 1, 2000), 1);
  EXPECT_EQ(srv_->stats().open_connections, 0u);
}

// The first stop signal arms the exit deadline on the core's own thread:
// the process ends at it even though the host never looks at its events.
TEST(StopDeadline, TheFirstStopSignalArmsItNatively) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(
      {
        echo_handler h;
        server_options o;
        std::unique_ptr<server> srv;
        srv = std::make_unique<server>(o, [&](stream_socket s, io_thread& t) -> std::shared_ptr<connection_base> {
          return std::make_shared<http::connection>(std::move(s), t, h, srv->options());
        });
        int fd = ::socket(AF_INET, SOCK_STREAM, 0);
        sockaddr_in a{};
        a.sin_family = AF_INET;
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
        ::listen(fd, 8);
        srv->adopt_listener(fd);
        srv->arm_deadline_on_stop(std::chrono::milliseconds(100), "stop overran: {detail}");
        srv->live()->in_app = 3;
        srv->start();
        ::raise(SIGTERM);
        std::this_thread::sleep_for(std::chrono::seconds(30));  // "stuck": never takes the event
      },
      ::testing::ExitedWithCode(1), "stop overran: 0 connections open, 3 requests in the app, 0 queued");
}

// The stop deadline ends the process with status 1 and its line, whatever
// the process is doing (here: sleeping far past it).
TEST(ExitDeadline, ExitsWithTheLineAtTheDeadline) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(
      {
        exit_deadline::arm(std::chrono::milliseconds(50), "stop deadline passed: {detail}",
                           [] { return std::string("2 requests cut"); });
        std::this_thread::sleep_for(std::chrono::seconds(30));
      },
      ::testing::ExitedWithCode(1), "stop deadline passed: 2 requests cut");
}

TEST(ExitDeadline, DisarmCancelsIt) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(
      {
        exit_deadline::arm(std::chrono::milliseconds(100), "must not appear");
        exit_deadline::disarm();
        std::this_thread::sleep_for(std::chrono::milliseconds(300));
        std::fprintf(stderr, "still running\n");
        std::_Exit(0);
      },
      ::testing::ExitedWithCode(0), "still running");
}
