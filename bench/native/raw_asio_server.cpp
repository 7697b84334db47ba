// raw_asio_server: the "raw single-threaded Asio server with a constant reply"
// reference peer (an upper bound for HTTP over Asio on one core).
//
//   raw_asio_server PORT
//
// One io_context on one thread; acceptor on 127.0.0.1:PORT; TCP_NODELAY on
// every accepted socket. Per connection: async_read_some into a buffer, then
// for each complete request in it append the constant response
//   HTTP/1.1 200 OK / Content-Type: text/plain / Content-Length: 14 / "Hello, world!\n"
// to an output buffer and send all of it with one async_write (pipelined
// requests get one write), then read again. Keep-alive; close on EOF/error.
// Prints `listening on 127.0.0.1:PORT` once accepting; exits 0 on SIGTERM/SIGINT.
//
// Deliberately NOT an HTTP parser: a request ends at the first "\r\n\r\n", so
// this baseline only handles GETs (requests without a body). That hand scan
// is the point: it is the least work an Asio server can do per request.
#include "serve_main.hpp"

#include <boost/asio.hpp>

#include <memory>
#include <string>

namespace asio = boost::asio;
using tcp = asio::ip::tcp;
using boost::system::error_code;

namespace {

const std::string kResponse =
    "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 14\r\n\r\nHello, world!\n";
const std::size_t kMaxRequest = 64 * 1024;  // an unterminated request longer than this closes the connection

class session : public std::enable_shared_from_this<session> {
 public:
  explicit session(tcp::socket socket) : socket_(std::move(socket)) {}

  void read() {
    socket_.async_read_some(asio::buffer(chunk_), [self = shared_from_this()](error_code ec, std::size_t n) {
      if (ec) return;  // EOF or error: the socket closes with the session
      self->in_.append(self->chunk_, n);
      self->respond();
    });
  }

 private:
  void respond() {
    std::size_t pos = 0, end;
    while ((end = in_.find("\r\n\r\n", pos)) != std::string::npos) {
      out_ += kResponse;
      pos = end + 4;
    }
    in_.erase(0, pos);
    if (in_.size() > kMaxRequest) return;  // drop the connection
    if (out_.empty()) return read();
    asio::async_write(socket_, asio::buffer(out_), [self = shared_from_this()](error_code ec, std::size_t) {
      if (ec) return;
      self->out_.clear();
      self->read();
    });
  }

  tcp::socket socket_;
  char chunk_[16 * 1024];
  std::string in_;   // received, not yet answered
  std::string out_;  // responses being written
};

}  // namespace

int main(int argc, char** argv) { return bench::serve_main<session>(argc, argv, "raw_asio_server"); }
