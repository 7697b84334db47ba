#pragma once
/// The server: I/O threads, the listener, the connections, the signals it
/// owns while serving, and graceful stop. Protocol-agnostic: a factory
/// turns each accepted socket into a connection.
#include "connection_base.hpp"
#include "io_thread.hpp"
#include "log.hpp"
#include "options.hpp"

#include <boost/asio/basic_socket_acceptor.hpp>
#include <boost/asio/generic/stream_protocol.hpp>
#include <boost/asio/signal_set.hpp>

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

namespace baseplate {

using stream_socket = boost::asio::generic::stream_protocol::socket;

/// Builds the connection for an accepted socket (called on its I/O thread).
using connection_factory = std::function<std::shared_ptr<connection_base>(stream_socket, io_thread&)>;

using log_record = log::record;

/// What woke the host's main thread.
struct server_events {
  bool stop = false;         ///< SIGTERM, SIGINT or SIGUSR2 arrived
  int stop_signal = 0;       ///< which one
  bool dump = false;         ///< SIGUSR1 arrived
  std::vector<log_record> logs;
};

/// Counters for diagnostics (SIGUSR1) and tests.
struct server_stats {
  std::size_t open_connections;
  std::uint64_t accepted;
};

class server {
 public:
  server(server_options opts, connection_factory make_connection);
  server(const server&) = delete;
  server& operator=(const server&) = delete;
  ~server();

  const server_options& options() const { return opts_; }

  /// Serves on a listening socket the host bound (or inherited). The fd is
  /// duplicated: the caller keeps its own. Before start().
  void adopt_listener(int fd);

  /// Starts the I/O threads and accepting; installs the signal handlers.
  void start();

  /// An eventfd that is readable while events are pending (for hosts that
  /// run their own event loop).
  int event_fd() const { return event_fd_; }
  /// Blocks until an event is pending (timeout < 0: forever), then takes them.
  server_events wait_events(int timeout_ms);
  /// Takes pending events without blocking.
  server_events take_events();

  /// Queues a native log record for the host; never blocks (a full queue
  /// drops the record and counts it).
  void post_log(log::record r);

  /// Graceful stop: stop accepting, close idle connections, wait for the
  /// others until stop_timeout, then close the rest. Blocks. Returns the
  /// number of connections closed by force.
  std::size_t stop();
  /// The steps of stop() for a host that must keep its own loop running
  /// meanwhile: begin_stop() returns at once; the host watches
  /// stats().open_connections, then calls force_close() at its deadline.
  void begin_stop();
  std::size_t force_close();
  /// Stops the I/O threads (after the app's workers are gone).
  void join();

  server_stats stats() const;

 private:
  void accept();
  void notify_events();
  void on_connection_closed();

  server_options opts_;
  connection_factory make_connection_;
  std::vector<std::unique_ptr<io_thread>> threads_;
  std::optional<boost::asio::basic_socket_acceptor<boost::asio::generic::stream_protocol>> acceptor_;
  std::optional<boost::asio::signal_set> signals_;
  std::size_t next_thread_ = 0;
  bool accept_paused_ = false;  ///< on thread 0: max_concurrency reached
  bool stopping_ = false;       ///< on thread 0

  std::atomic<std::size_t> open_{0};
  /// Requests handed to the app and not yet answered (max_pending_requests),
  /// counted by the connections of every I/O thread.
  std::shared_ptr<std::atomic<std::size_t>> pending_requests_ = std::make_shared<std::atomic<std::size_t>>(0);
  std::atomic<std::uint64_t> accepted_{0};
  std::mutex drained_mutex_;
  std::condition_variable drained_;

  int event_fd_ = -1;
  std::mutex events_mutex_;
  server_events pending_;
  bool event_signalled_ = false;
  std::size_t dropped_logs_ = 0;
};

}  // namespace baseplate
