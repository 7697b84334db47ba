#pragma once
/// One HTTP/1.x connection: Beast parses each request, the app (through an
/// exchange) reads the body and writes the response, and the connection
/// frames it (Content-Length, chunked, or close-delimited), keeps it alive,
/// and answers protocol errors itself (400, 413, 431).
#include "../connection_base.hpp"
#include "../options.hpp"
#include "response_head.hpp"

#include <baseplate/http/exchange.hpp>

#include <boost/asio/generic/stream_protocol.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/buffer_body.hpp>
#include <boost/beast/http/parser.hpp>

#include <deque>
#include <memory>
#include <optional>
#include <string>

namespace baseplate {
class io_thread;
}

namespace baseplate::http {

class connection final : public connection_base {
 public:
  using socket_type = boost::asio::generic::stream_protocol::socket;

  connection(socket_type socket, io_thread& thread, handler& app, const server_options& opts);
  ~connection() override;

  void start() override;
  void shutdown() override;
  void close() override;
  void check_deadline(clock::time_point now) override;

 private:
  class exchange_impl;
  friend class exchange_impl;

  enum class phase {
    idle,         ///< waiting for the first byte of a request
    header,       ///< reading a request header
    prebody,      ///< reading a small body before calling the app
    app,          ///< the app has the request
    closed,
  };

  struct pending_write {
    response_part part;
    write_handler done;
    int file_fd = -1;  ///< >= 0: a send_file request
    std::uint64_t file_offset = 0, file_count = 0;
  };

  std::shared_ptr<connection> self() { return std::static_pointer_cast<connection>(shared_from_this()); }
  void read_request();
  void on_read(boost::system::error_code ec, std::size_t n, bool header);
  void parse_header();
  void on_header();
  void dispatch();
  void fail_request(unsigned status, std::string_view why);

  // Body (I/O thread only).
  void fill_body(std::size_t want, std::function<void(boost::system::error_code)> done);
  void parse_body(std::size_t want, boost::system::error_code& ec);
  void app_read(std::uint64_t id, std::size_t max, read_handler h);

  // Response (I/O thread only).
  void app_write(std::uint64_t id, pending_write w);
  void next_write();
  void write_part(pending_write& w);
  void write_file(pending_write& w);
  void wait_file_writable();
  void on_written(boost::system::error_code ec);
  void finish_request();
  void write_access_log();
  void app_abort(std::uint64_t id);
  void linger_close();

  socket_type socket_;
  io_thread& thread_;
  handler& app_;
  const server_options& opts_;
  /// opts_.pending_requests, held so exchanges that outlive the server can still count down.
  std::shared_ptr<std::atomic<std::size_t>> pending_;

  phase phase_ = phase::idle;
  clock::time_point deadline_ = clock::time_point::max();
  bool stopping_ = false;
  boost::beast::flat_buffer buffer_;
  std::size_t header_bytes_ = 0;  ///< bytes of the current request's header parsed so far
  std::optional<boost::beast::http::request_parser<boost::beast::http::buffer_body>> parser_;
  std::string remote_host_, local_host_;
  std::uint16_t remote_port_ = 0, local_port_ = 0;

  // The current request.
  std::uint64_t request_id_ = 0;  ///< exchanges of past requests are ignored
  bool is_head_ = false;
  unsigned version_ = 11;
  bool keep_alive_ = true;
  std::string body_pending_;    ///< body bytes received, not yet given to the app
  std::string body_delivered_;  ///< the bytes last handed to a read_handler
  bool body_done_ = true;
  bool continue_sent_ = false;
  bool expect_continue_ = false;
  bool reading_body_ = false;

  std::string trace_id_ = "-";         ///< of the current request, for native records
  clock::time_point started_;          ///< when the current request was dispatched (access log)
  std::string access_line_;           ///< method and target of the current request (access log)
  unsigned status_ = 0;               ///< status of the current response (access log)
  std::uint64_t body_bytes_ = 0;      ///< body bytes of the current response (access log)

  // The current response.
  enum class body_mode { none, length, chunked, until_close };
  bool head_sent_ = false;
  body_mode mode_ = body_mode::none;
  std::uint64_t remaining_ = 0;  ///< bytes still owed under Content-Length
  std::deque<pending_write> writes_;
  bool writing_ = false;
  std::string out_;  ///< head and chunk framing of the write in progress
};

}  // namespace baseplate::http
