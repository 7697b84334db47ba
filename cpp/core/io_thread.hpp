#pragma once
/// One I/O thread: an io_context run by one std::thread, the connections
/// it owns, and a once-a-second sweep that enforces their deadlines.
#include "connection_base.hpp"

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>

#include <functional>
#include <memory>
#include <thread>
#include <unordered_map>

namespace baseplate {

class io_thread {
 public:
  /// `on_closed` runs (on this thread) each time a connection deregisters.
  explicit io_thread(std::function<void()> on_closed);
  io_thread(const io_thread&) = delete;
  io_thread& operator=(const io_thread&) = delete;
  ~io_thread();

  boost::asio::io_context& context() { return ctx_; }

  /// Starts the thread. The io_context runs until stop().
  void start();
  /// Stops the io_context and joins the thread.
  void stop();

  /// Tracks a connection until it calls remove(); only on this thread.
  void add(std::shared_ptr<connection_base> c);
  void remove(connection_base* c);
  /// Applies f to every tracked connection; only on this thread.
  void for_each(const std::function<void(connection_base&)>& f);

 private:
  void sweep();

  boost::asio::io_context ctx_{1};  ///< concurrency hint 1: one thread runs it
  boost::asio::executor_work_guard<boost::asio::io_context::executor_type> guard_;
  boost::asio::steady_timer sweep_timer_;
  std::unordered_map<connection_base*, std::shared_ptr<connection_base>> connections_;
  std::function<void()> on_closed_;
  std::thread thread_;
};

}  // namespace baseplate
