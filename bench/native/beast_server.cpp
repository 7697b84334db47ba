// beast_server: the minimal single-threaded Boost.Beast HTTP server peer.
//
//   beast_server PORT
//
// One io_context on one thread; acceptor on 127.0.0.1:PORT; TCP_NODELAY on
// every accepted socket. Per connection, in a loop: http::async_read into a
// request<string_body> with a flat_buffer, answer 200 with Content-Type
// text/plain and body "Hello, world!\n" (keep_alive as the request asks,
// prepare_payload), http::async_write; close on EOF/error or when the
// request does not keep the connection alive.
// Prints `listening on 127.0.0.1:PORT` once accepting; exits 0 on SIGTERM/SIGINT.
#include "serve_main.hpp"

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include <memory>

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
using boost::system::error_code;

namespace {

class session : public std::enable_shared_from_this<session> {
 public:
  explicit session(tcp::socket socket) : socket_(std::move(socket)) {}

  void read() {
    req_ = {};
    http::async_read(socket_, buffer_, req_, [self = shared_from_this()](error_code ec, std::size_t) {
      if (ec) return;  // EOF or error: the socket closes with the session
      self->write();
    });
  }

 private:
  void write() {
    res_ = {http::status::ok, req_.version()};
    res_.set(http::field::content_type, "text/plain");
    res_.body() = "Hello, world!\n";
    res_.keep_alive(req_.keep_alive());
    res_.prepare_payload();
    http::async_write(socket_, res_, [self = shared_from_this()](error_code ec, std::size_t) {
      if (ec) return;
      if (!self->res_.keep_alive()) {
        self->socket_.shutdown(tcp::socket::shutdown_send, ec);
        return;
      }
      self->read();
    });
  }

  tcp::socket socket_;
  beast::flat_buffer buffer_;
  http::request<http::string_body> req_;
  http::response<http::string_body> res_;
};

}  // namespace

int main(int argc, char** argv) { return bench::serve_main<session>(argc, argv, "beast_server"); }
