#pragma once
/// One HTTP/1.x connection: the I/O and the deadlines. What the bytes mean
/// is the request_reader's business and how a response is framed the
/// response_writer's; this class moves bytes between them, the socket and
/// the app (through an exchange), and answers what the reader rejects.
#include "../stream_connection.hpp"
#include "request_reader.hpp"
#include "response_writer.hpp"

#include <baseplate/http/exchange.hpp>

#include <boost/beast/core/flat_buffer.hpp>

#include <array>
#include <memory>
#include <vector>
#include <string>

namespace baseplate::http {

class connection final : public stream_connection {
 public:
  connection(socket_type socket, io_thread& thread, handler& app, const server_options& opts);
  ~connection() override;

  void start() override;

 private:
  class exchange_impl;
  friend class exchange_impl;

  enum class phase {
    idle,     ///< waiting for the first byte of a request
    header,   ///< reading a request head
    prebody,  ///< reading a small body before calling the app
    app,      ///< the app has the request
    linger,   ///< response sent, draining what the client still sends before closing
  };

  struct pending_write {
    response_part part;
    write_handler done;
    int file_fd = -1;  ///< >= 0: a send_file request
    std::uint64_t file_offset = 0, file_count = 0;
  };

  std::shared_ptr<connection> self() { return std::static_pointer_cast<connection>(shared_from_this()); }
  bool idle() const override { return phase_ == phase::idle; }
  void on_close() override;

  // Requests (I/O thread only).
  void read_request();
  void on_read(boost::system::error_code ec, std::size_t n);
  void parse_head();
  void on_head();
  void dispatch();
  void fail_request(unsigned status, std::string_view why);

  // Body (I/O thread only).
  void fill_body(std::size_t want, std::function<void(boost::system::error_code)> done);
  boost::system::error_code parse_body(std::size_t want);
  void app_read(std::uint64_t id, std::size_t max, read_handler h);

  // Response (I/O thread only).
  void app_write(std::uint64_t id, pending_write&& w);
  void app_abort(std::uint64_t id, const char* why);
  void next_write();
  void write_part(pending_write& w);
  /// Frames w's part into writer_; false when there is nothing to send
  /// (the part was refused and handled).
  bool frame_part(pending_write& w);
  void write_file(pending_write& w);
  void wait_file_writable();
  void on_written(boost::system::error_code ec);
  void finish_request();
  void write_access_log();
  void linger_close();
  void fail_writes();
  void start_write();
  /// Ends the write in current_; returns its handler.
  write_handler release_current();
  /// Storage for the next request head: a slot no exchange holds any more.
  request* free_slot();

  handler& app_;
  request_reader reader_;
  response_writer writer_;
  phase phase_ = phase::idle;
  boost::beast::flat_buffer buffer_;

  /// Request heads, reused across keep-alive requests: the reader parses
  /// straight into a slot that no exchange holds any more, so its strings
  /// keep their capacity and the connection's addresses are set once. An
  /// exchange shares its slot, keeping the head fixed while the app holds
  /// it; two slots let the next request be read while an app still holds
  /// the last one.
  std::array<std::shared_ptr<request>, 2> slots_;
  std::size_t slot_ = 0;  ///< the slot of the current request

  // The current request.
  std::uint64_t request_id_ = 0;  ///< exchanges of past requests are ignored
  std::string body_pending_;      ///< body bytes received, not yet given to the app
  std::string body_delivered_;    ///< the bytes last handed to a read_handler
  bool continue_sent_ = false;
  /// Since when the reader waits for chunk metadata (a chunk-size line or
  /// trailers): that wait is held to header_timeout, however slowly it comes.
  clock::time_point metadata_since_ = clock::time_point::max();

  std::string trace_id_ = "-";  ///< of the current request, for native records
  clock::time_point started_;   ///< when the current request was dispatched (access log)
  std::string access_line_;     ///< method and target of the current request (access log)

  // The current response. current_ is the write on the wire (its body
  // bytes are referred to, so it never moves while written); writes_ from
  // write_at_ on wait behind it, in a vector that keeps its capacity (no
  // heap node per write).
  pending_write current_;
  bool has_current_ = false;
  std::vector<pending_write> writes_;
  std::size_t write_at_ = 0;
  bool writing_ = false;
  int sync_depth_ = 0;  ///< on_written calls nested in write_part
  bool has_write() const { return write_at_ < writes_.size(); }
  pending_write& front_write() { return writes_[write_at_]; }
  void pop_write() {
    if (++write_at_ == writes_.size()) {
      writes_.clear();
      write_at_ = 0;
    }
  }
  template <class... A>
  void push_write(A&&... a) {
    writes_.push_back(pending_write{std::forward<A>(a)...});
  }
};

}  // namespace baseplate::http
