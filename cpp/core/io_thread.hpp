#pragma once
/// One I/O thread: an io_context run by one std::thread, the connections
/// it owns, and a once-a-second sweep that enforces their deadlines.
///
/// Or, inline (io_threads = 0), the same without a thread of its own: the
/// host's thread runs the loop with poll() whenever reactor_fd() is
/// readable (the gevent hub does, see python/inline_dispatcher).
#include "connection_base.hpp"
#include "stream_connection.hpp"

#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/steady_timer.hpp>

#include <atomic>
#include <cstddef>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

namespace baseplate {

class io_thread {
 public:
  /// `on_closed` runs (on this thread) each time a connection deregisters.
  /// `pending_requests` is the server's count of requests handed to the app
  /// (shared by all its threads; see max_pending_requests). `run_inline`: no
  /// thread; the host calls poll().
  io_thread(std::function<void()> on_closed, std::shared_ptr<std::atomic<std::size_t>> pending_requests,
            bool run_inline = false);
  io_thread(const io_thread&) = delete;
  io_thread& operator=(const io_thread&) = delete;
  ~io_thread();

  boost::asio::io_context& context() { return ctx_; }
  /// The door app threads post through; it closes when this thread is destroyed.
  const std::shared_ptr<post_gate>& gate() const { return gate_; }
  /// The server's count of pending requests; connections hold a copy, so
  /// handles that outlive the server can still count down.
  const std::shared_ptr<std::atomic<std::size_t>>& pending_requests() const { return pending_requests_; }

  /// Starts the thread (inline: only the sweep). The io_context runs until stop().
  /// `name`: the thread's name as `top -H` and /proc/PID/task/TID/comm show
  /// it (15 bytes at most kept); unused inline.
  void start(const std::string& name = "bps-io");
  /// Stops the io_context and joins the thread.
  void stop();

  /// Inline: whether the host's thread runs this loop.
  bool is_inline() const { return inline_; }
  /// Inline: readable while the loop has work (see reactor_descriptor.hpp).
  int reactor_fd() const { return reactor_fd_; }
  /// Inline, on the host's thread: runs the handlers that are ready, without
  /// blocking; returns how many ran. Handlers see this as current().
  std::size_t poll();

  /// Tracks a connection until it calls remove(); only on this thread.
  void add(std::shared_ptr<connection_base> c);
  void remove(connection_base* c);
  /// Runs `f` once at the end of this event-loop round, however often it is
  /// asked for during the round (handlers of the round run first). Only on
  /// this thread. Used to batch wake-ups of other threads.
  void at_end_of_round(std::function<void()> f);
  /// The io_thread running the calling thread, or nullptr.
  static io_thread* current();

  /// Applies f to every tracked connection; only on this thread.
  void for_each(const std::function<void(connection_base&)>& f);

 private:
  void sweep();

  boost::asio::io_context ctx_{1};  ///< concurrency hint 1: one thread runs it
  boost::asio::executor_work_guard<boost::asio::io_context::executor_type> guard_;
  boost::asio::steady_timer sweep_timer_;
  std::unordered_map<connection_base*, std::shared_ptr<connection_base>> connections_;
  std::function<void()> on_closed_;
  std::shared_ptr<std::atomic<std::size_t>> pending_requests_;
  std::vector<std::function<void()>> end_of_round_;  ///< pending at_end_of_round work
  std::shared_ptr<post_gate> gate_ = std::make_shared<post_gate>(ctx_);
  const bool inline_;
  int reactor_fd_ = -1;  ///< inline: owned by ctx_
  /// Inline: the gate's wake-up, registered with the reactor (and the probe
  /// that finds the reactor's descriptor).
  std::optional<boost::asio::posix::stream_descriptor> wake_;
  bool stopped_ = false;
  std::thread thread_;
};

}  // namespace baseplate
