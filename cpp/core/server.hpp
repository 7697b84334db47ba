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
#include <functional>
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
  bool stop = false;         ///< SIGTERM, SIGINT, SIGUSR2 or SIGHUP arrived (the first since the last take)
  int stop_signal = 0;       ///< which one
  bool dump = false;         ///< SIGUSR1 arrived
  std::vector<log_record> logs;
};

/// Counters for diagnostics (SIGUSR1) and tests.
struct server_stats {
  std::size_t open_connections;
  std::uint64_t accepted;
};

/// What is in flight now, readable from any thread without locks, and
/// outliving the server: the exit deadline reads it when it fires, maybe
/// while the host is tearing the server down.
struct live_counters {
  std::atomic<std::size_t> open_connections{0};  ///< accepted and not yet closed
  std::atomic<std::size_t> in_app{0};            ///< requests the host's app runs now (the host counts them)
  std::atomic<std::size_t> queued{0};            ///< requests waiting for the host's app (the host counts them)
  /// "2 connections open, 1 request in the app, 0 queued".
  std::string describe() const;
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

  /// Starts the I/O threads and accepting; installs the signal handlers
  /// (SIGTERM, SIGINT, SIGUSR2 and SIGHUP stop; SIGUSR1 dumps).
  void start();

  /// Arms exit_deadline at `after` from the first stop signal, on the I/O
  /// thread that receives it: the stop is bounded even when the host's
  /// main thread is stuck (a request spinning on the CPU with the GIL held
  /// on the gevent hub). "{detail}" in `line` becomes live().describe().
  /// Before start().
  void arm_deadline_on_stop(std::chrono::milliseconds after, std::string line);

  /// io_threads = 0: no I/O thread; the host's thread runs the one loop
  /// (inline_loop()) and the signals go to a small thread of their own.
  bool is_inline() const { return threads_[0]->is_inline(); }
  /// The loop the host runs when is_inline().
  io_thread& inline_loop() { return *threads_[0]; }

  /// The counters the deadline line and diagnostics read.
  const std::shared_ptr<live_counters>& live() const { return live_; }

  /// An eventfd that is readable while events are pending (for hosts that
  /// run their own event loop).
  int event_fd() const { return event_fd_; }
  /// Blocks until an event is pending (timeout < 0: forever), then takes them.
  server_events wait_events(int timeout_ms);
  /// Takes pending events without blocking.
  server_events take_events();

  /// For a host whose main thread may be stuck (gevent dispatch: a request
  /// keeping the hub): a thread of its own blocks in wait_signal() and gets
  /// SIGUSR1 (then no longer in server_events) and every stop signal (also
  /// still in server_events, for the main thread's stop). Before start().
  void route_signals_to_waiter() { signals_to_waiter_ = true; }
  /// Blocks (timeout < 0: forever) until a signal routed here: returns it;
  /// 0 on timeout; -1 once the server has stopped (join()).
  int wait_signal(int timeout_ms);

  /// Queues a native log record for the host; never blocks (a full queue
  /// drops the record and counts it).
  void post_log(log::record r);

  /// Graceful stop: stop accepting, close idle connections, wait for the
  /// others until stop_timeout, then close the rest. Blocks. Returns the
  /// number of connections closed by force.
  std::size_t stop();
  /// The steps of stop() for a host that must keep its own loop running
  /// meanwhile: begin_stop() returns at once; the host waits on event_fd()
  /// (written when the last connection closes) and checks
  /// stats().open_connections, then calls force_close() at its deadline.
  /// Stop signals keep being reported until join().
  void begin_stop();
  /// Closes every connection; waits at most `wait` for them to go (inline:
  /// never waits, the host's loop does the closing). Returns how many were
  /// open.
  std::size_t force_close(std::chrono::milliseconds wait = std::chrono::milliseconds(500));
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
  /// Inline: the signals' own thread. The host's thread may be stuck in a
  /// request, and a stop signal must still arm the exit deadline and
  /// SIGUSR1 still reach the dump thread. No request ever runs on it.
  std::unique_ptr<io_thread> signal_thread_;
  std::optional<boost::asio::basic_socket_acceptor<boost::asio::generic::stream_protocol>> acceptor_;
  std::optional<boost::asio::signal_set> signals_;
  std::size_t next_thread_ = 0;
  bool accept_paused_ = false;  ///< on thread 0: max_concurrency reached
  bool stopping_ = false;       ///< on thread 0
  std::atomic<bool> stop_begun_{false};  ///< begin_stop() ran: the last close wakes the host
  bool stop_signalled_ = false;          ///< on thread 0: a stop signal arrived
  std::optional<std::chrono::milliseconds> deadline_after_;  ///< arm_deadline_on_stop
  std::string deadline_line_;

  std::shared_ptr<live_counters> live_ = std::make_shared<live_counters>();
  std::atomic<std::size_t>& open_ = live_->open_connections;
  /// Requests handed to the app and not yet answered (max_pending_requests),
  /// counted by the connections of every I/O thread.
  std::shared_ptr<std::atomic<std::size_t>> pending_requests_ = std::make_shared<std::atomic<std::size_t>>(0);
  std::atomic<std::uint64_t> accepted_{0};
  std::mutex drained_mutex_;
  std::condition_variable drained_;

  bool signals_to_waiter_ = false;
  std::mutex waiter_mutex_;
  std::condition_variable waiter_cv_;
  std::deque<int> waiter_signals_;  ///< routed signals not yet taken by wait_signal()
  bool waiter_closed_ = false;

  int event_fd_ = -1;
  std::mutex events_mutex_;
  server_events pending_;
  bool event_signalled_ = false;
  std::size_t dropped_logs_ = 0;
};

}  // namespace baseplate
