#pragma once
/// What the HTTP and Thrift connections do alike: own the socket, know the
/// peer, hold a deadline the I/O thread's sweep enforces, count the
/// requests handed to the app against max_pending_requests, take completions
/// from app threads safely (even after the server is gone), and stop
/// gracefully. The protocol classes only parse, frame and call the app.
#include "connection_base.hpp"
#include "options.hpp"

#include <boost/asio/generic/stream_protocol.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

namespace baseplate {

class io_thread;

/// A door into one I/O thread's event loop that app threads may use for
/// as long as they hold it: once the loop is gone, post() drops the work
/// instead of touching a destroyed io_context (an app may keep a request
/// handle in static storage until the process exits).
class post_gate {
 public:
  explicit post_gate(boost::asio::io_context& ctx) : ctx_(&ctx) {}
  /// Runs `f` on the loop's thread; false when the loop is gone. A
  /// template, so the handler goes to Asio's recycled storage as it is
  /// (no std::function allocation per completion).
  template <class F>
  bool post(F&& f) {
    {
      std::lock_guard<std::mutex> lk(mutex_);
      if (!ctx_) return false;
      boost::asio::post(*ctx_, std::forward<F>(f));
    }
    if (wake_fd_ >= 0) wake();
    return true;
  }
  /// Called by the loop's owner before it destroys the loop.
  void close();

  /// Inline loops (io_thread): an eventfd in the loop's reactor, written by
  /// the first post() from outside the loop after each poll. Asio only
  /// interrupts its reactor for such a post while a thread blocks in
  /// run(); after poll() it never does (its scheduler leaves the task
  /// marked interrupted), so the host would not notice the work.
  void set_wake_fd(int fd) { wake_fd_ = fd; }
  /// The loop is about to poll: the next post from outside wakes it again.
  void polling() { wake_pending_.store(false, std::memory_order_relaxed); }

 private:
  void wake();

  std::mutex mutex_;
  boost::asio::io_context* ctx_;
  int wake_fd_ = -1;
  std::atomic<bool> wake_pending_{false};
};

class stream_connection : public connection_base {
 public:
  using socket_type = boost::asio::generic::stream_protocol::socket;

  stream_connection(socket_type socket, io_thread& thread, const server_options& opts);
  ~stream_connection() override;

  /// Graceful stop. A connection with nothing in progress closes, except
  /// that a request already on its way is still served (with
  /// "Connection: close"): a connection that has not sent its first request
  /// gets up to stop_grace to send it, and an idle keep-alive connection
  /// with bytes waiting reads them.
  void shutdown() final;
  /// Closes the socket now; the protocol's on_close() fails what is pending.
  void close() final;
  void check_deadline(clock::time_point now) final;

  /// How long a connection accepted before a stop may take to send its
  /// first request.
  static constexpr std::chrono::seconds stop_grace{1};

 protected:
  /// Nothing in progress: waiting for the first byte of a request.
  virtual bool idle() const = 0;
  /// Fails the app's pending operations; the socket is already closed.
  virtual void on_close() = 0;

  /// Counts a request handed to the app; false (and not counted) when
  /// max_pending_requests are pending already.
  bool admit();
  /// Runs `f` on this connection's I/O thread, from any thread.
  template <class F>
  void post(F&& f) const {
    gate_->post(std::forward<F>(f));
  }
  /// Why the connection is being closed, at DEBUG.
  void debug(const char* logger, const std::string& why) const;
  /// The access log line of one request or call, on baseplate_serve.access:
  /// `who "request" fields 1.234ms`, under the request's trace id.
  void log_access(const std::string& who, const std::string& request, const char* fields, clock::time_point started,
                  const std::string& trace_id) const;

  socket_type& socket() { return *socket_; }
  bool closed() const { return !socket_; }

  io_thread& thread_;
  const server_options& opts_;
  /// The server's count of pending requests, held so handles that outlive
  /// the server can still count down.
  std::shared_ptr<std::atomic<std::size_t>> pending_;
  std::shared_ptr<post_gate> gate_;
  clock::time_point deadline_ = clock::time_point::max();
  bool stopping_ = false;
  /// Requests (calls) begun on this connection.
  std::uint64_t served_ = 0;
  std::string remote_host_, local_host_;  ///< empty for UNIX sockets
  std::uint16_t remote_port_ = 0, local_port_ = 0;
  /// "host:port" of the peer, or "a local client".
  std::string peer_;

 private:
  /// Reset on close: no Asio object outlives the I/O thread's io_context,
  /// even when an app keeps this connection alive through a handle.
  std::optional<socket_type> socket_;
};

}  // namespace baseplate
