#include "io_thread.hpp"

#include "log.hpp"
#include "reactor_descriptor.hpp"

#include <boost/asio/post.hpp>

#include <pthread.h>
#include <sys/eventfd.h>

#include <cerrno>
#include <system_error>

#include <vector>

namespace baseplate {
namespace {
thread_local io_thread* current_thread = nullptr;
}

io_thread* io_thread::current() { return current_thread; }

void io_thread::at_end_of_round(std::function<void()> f) {
  if (end_of_round_.empty()) {
    // Posted now, it runs after the handlers already made ready by this
    // round's epoll wait: one flush for all the work of the round.
    boost::asio::post(ctx_, [this] {
      auto work = std::move(end_of_round_);
      end_of_round_.clear();
      for (auto& w : work) w();
    });
  }
  end_of_round_.push_back(std::move(f));
}

io_thread::io_thread(std::function<void()> on_closed, std::shared_ptr<std::atomic<std::size_t>> pending_requests,
                     bool run_inline)
    : guard_(boost::asio::make_work_guard(ctx_)),
      sweep_timer_(ctx_),
      on_closed_(std::move(on_closed)),
      pending_requests_(std::move(pending_requests)),
      inline_(run_inline) {
  if (!inline_) return;
  int fd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (fd < 0) throw std::system_error(errno, std::generic_category(), "eventfd");
  // assign() registers it with the reactor (epoll_ctl ADD, edge-triggered:
  // each write is a new event, so it is never read).
  wake_.emplace(ctx_, fd);
  reactor_fd_ = reactor_descriptor(fd);
  gate_->set_wake_fd(fd);
}

io_thread::~io_thread() {
  stop();
  gate_->close();
}

void io_thread::start(const std::string& name) {
  sweep();
  if (inline_) return;
  thread_ = std::thread([this, name = name.substr(0, 15)] {
    ::pthread_setname_np(::pthread_self(), name.c_str());
    current_thread = this;
    for (;;) {
      try {
        ctx_.run();
        return;
      } catch (const std::exception& e) {
        // A handler threw: log and keep the thread serving everyone else.
        log::write(log::level::error, "baseplate_serve.core", std::string("I/O handler failed: ") + e.what());
      }
    }
  });
}

std::size_t io_thread::poll() {
  if (stopped_) return 0;
  io_thread* outer = current_thread;
  current_thread = this;
  gate_->polling();
  std::size_t n = 0;
  try {
    n = ctx_.poll();
  } catch (const std::exception& e) {
    // As on a thread of its own: a handler that throws costs its own work only.
    log::write(log::level::error, "baseplate_serve.core", std::string("I/O handler failed: ") + e.what());
    n = 1;
  }
  current_thread = outer;
  return n;
}

void io_thread::stop() {
  if (inline_) {
    if (stopped_) return;
    stopped_ = true;
    guard_.reset();
    ctx_.stop();
    return;
  }
  if (!thread_.joinable()) return;
  guard_.reset();
  ctx_.stop();
  thread_.join();
}

void io_thread::add(std::shared_ptr<connection_base> c) {
  auto* key = c.get();
  connections_.emplace(key, std::move(c));
}

void io_thread::remove(connection_base* c) {
  auto it = connections_.find(c);
  if (it == connections_.end()) return;
  auto keep = std::move(it->second);  // destroyed after the map is consistent
  connections_.erase(it);
  if (on_closed_) on_closed_();
}

void io_thread::for_each(const std::function<void(connection_base&)>& f) {
  // Copy first: f may close connections, which removes them from the map.
  std::vector<std::shared_ptr<connection_base>> all;
  all.reserve(connections_.size());
  for (auto& [k, v] : connections_) all.push_back(v);
  for (auto& c : all) f(*c);
}

void io_thread::sweep() {
  sweep_timer_.expires_after(std::chrono::seconds(1));
  sweep_timer_.async_wait([this](boost::system::error_code ec) {
    if (ec) return;
    auto now = clock::now();
    for_each([now](connection_base& c) { c.check_deadline(now); });
    sweep();
  });
}

}  // namespace baseplate
