#include "server.hpp"

#include "exit_deadline.hpp"

#include <boost/asio/post.hpp>

#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstring>
#include <stdexcept>
#include <system_error>

namespace baseplate {
namespace {
/// Native records held for the host at most; past that they are counted and dropped.
constexpr std::size_t max_queued_logs = 10'000;
constexpr const char* core_logger = "baseplate_serve.core";
}  // namespace

std::string live_counters::describe() const {
  auto plural = [](std::size_t n, const char* one, const char* many) {
    return std::to_string(n) + " " + (n == 1 ? one : many);
  };
  return plural(open_connections.load(), "connection", "connections") + " open, " +
         plural(in_app.load(), "request", "requests") + " in the app, " + std::to_string(queued.load()) + " queued";
}

server::server(server_options opts, connection_factory make_connection)
    : opts_(std::move(opts)), make_connection_(std::move(make_connection)) {
  event_fd_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (event_fd_ < 0) throw std::system_error(errno, std::generic_category(), "eventfd");
  if (opts_.io_threads == 0) {
    threads_.push_back(std::make_unique<io_thread>([this] { on_connection_closed(); }, pending_requests_, true));
    signal_thread_ = std::make_unique<io_thread>(nullptr, pending_requests_);
  }
  for (unsigned i = 0; i < opts_.io_threads; ++i)
    threads_.push_back(std::make_unique<io_thread>([this] { on_connection_closed(); }, pending_requests_));
}

server::~server() {
  join();
  if (event_fd_ >= 0) ::close(event_fd_);
}

void server::adopt_listener(int fd) {
  int copy = ::fcntl(fd, F_DUPFD_CLOEXEC, 0);
  if (copy < 0) throw std::system_error(errno, std::generic_category(), "dup listener");
  sockaddr_storage addr{};
  socklen_t len = sizeof addr;
  if (::getsockname(copy, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    int e = errno;
    ::close(copy);
    throw std::system_error(e, std::generic_category(), "getsockname on listener");
  }
  boost::asio::generic::stream_protocol proto(addr.ss_family, addr.ss_family == AF_UNIX ? 0 : IPPROTO_TCP);
  acceptor_.emplace(threads_[0]->context());
  boost::system::error_code ec;
  acceptor_->assign(proto, copy, ec);
  if (ec) {
    ::close(copy);
    throw std::system_error(ec.value(), std::generic_category(), "adopt listener");
  }
  // Shared listeners (Einhorn) arrive non-blocking; keep them so.
  acceptor_->native_non_blocking(true, ec);
}

void server::start() {
  if (!acceptor_) throw std::logic_error("server::start without a listener");
  signals_.emplace((signal_thread_ ? signal_thread_ : threads_[0])->context(), SIGTERM, SIGINT, SIGUSR2);
  signals_->add(SIGHUP);  // a graceful stop too, never the default kill
  signals_->add(SIGUSR1);
  struct rearm {
    server* self;
    void operator()(boost::system::error_code ec, int sig) const {
      if (ec) return;
      if (self->signals_to_waiter_) {
        {
          std::lock_guard<std::mutex> lk(self->waiter_mutex_);
          // A dump already pending answers this SIGUSR1 too.
          auto& q = self->waiter_signals_;
          if (sig != SIGUSR1 || std::find(q.begin(), q.end(), SIGUSR1) == q.end()) q.push_back(sig);
        }
        self->waiter_cv_.notify_all();
        if (sig == SIGUSR1) {
          self->signals_->async_wait(*this);
          return;
        }
      }
      {
        std::lock_guard<std::mutex> lk(self->events_mutex_);
        if (sig == SIGUSR1) {
          self->pending_.dump = true;
        } else {
          // Armed here, on an I/O thread, not by the host: its main thread
          // may be stuck for as long as the app keeps it.
          if (!self->stop_signalled_ && self->deadline_after_)
            exit_deadline::arm(*self->deadline_after_, self->deadline_line_,
                               [live = self->live_] { return live->describe(); });
          self->stop_signalled_ = true;
          self->pending_.stop = true;
          self->pending_.stop_signal = sig;
        }
      }
      self->notify_events();
      self->signals_->async_wait(*this);
    }
  };
  signals_->async_wait(rearm{this});
  if (signal_thread_) signal_thread_->start("bps-signals");
  for (std::size_t i = 0; i < threads_.size(); ++i) threads_[i]->start("bps-io-" + std::to_string(i));
  // Through the gate, as every post from outside a loop: an inline loop is woken by it.
  threads_[0]->gate()->post([this] { accept(); });
}

void server::arm_deadline_on_stop(std::chrono::milliseconds after, std::string line) {
  deadline_after_ = after;
  deadline_line_ = std::move(line);
}

void server::accept() {
  if (stopping_ || !acceptor_->is_open()) return;
  if (opts_.max_concurrency && open_.load() >= opts_.max_concurrency) {
    accept_paused_ = true;  // resumed by on_connection_closed
    return;
  }
  io_thread& target = *threads_[next_thread_];
  next_thread_ = (next_thread_ + 1) % threads_.size();
  acceptor_->async_accept(target.context(), [this, &target](boost::system::error_code ec, stream_socket sock) {
    if (ec) {
      if (ec == boost::asio::error::operation_aborted || stopping_) return;
      // EAGAIN on a shared listener, EMFILE, ECONNABORTED: log the ones worth
      // knowing, then keep accepting.
      if (ec != boost::asio::error::would_block && ec != boost::asio::error::try_again)
        log::write(log::level::warning, core_logger, "accept: " + ec.message());
      if (ec == boost::asio::error::no_descriptors || ec == boost::asio::error::no_buffer_space) {
        // Out of fds: back off briefly instead of spinning.
        auto t = std::make_shared<boost::asio::steady_timer>(threads_[0]->context(), std::chrono::milliseconds(100));
        t->async_wait([this, t](boost::system::error_code) { accept(); });
        return;
      }
      accept();
      return;
    }
    ++open_;
    ++accepted_;
    int family = sock.local_endpoint().protocol().family();
    if (family == AF_INET || family == AF_INET6) {
      // Without TCP_NODELAY keep-alive replies stall on Nagle + delayed ACK.
      int one = 1;
      ::setsockopt(sock.native_handle(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    boost::asio::post(target.context(), [this, &target, s = std::move(sock)]() mutable {
      try {
        auto c = make_connection_(std::move(s), target);
        target.add(c);
        c->start();
      } catch (const std::exception& e) {
        log::write(log::level::error, core_logger, std::string("could not start connection: ") + e.what());
        on_connection_closed();
      }
    });
    accept();
  });
}

void server::on_connection_closed() {
  std::size_t now_open = --open_;
  if (opts_.max_concurrency && now_open < opts_.max_concurrency) {
    boost::asio::post(threads_[0]->context(), [this] {
      if (accept_paused_) {
        accept_paused_ = false;
        accept();
      }
    });
  }
  if (now_open == 0) {
    {
      std::lock_guard<std::mutex> lk(drained_mutex_);
      drained_.notify_all();
    }
    if (stop_begun_.load()) notify_events();  // a host waiting on event_fd() sees the stop has drained
  }
}

void server::notify_events() {
  {
    std::lock_guard<std::mutex> lk(events_mutex_);
    if (event_signalled_) return;
    event_signalled_ = true;
  }
  std::uint64_t one = 1;
  [[maybe_unused]] auto n = ::write(event_fd_, &one, sizeof one);
}

server_events server::take_events() {
  std::uint64_t v;
  [[maybe_unused]] auto n = ::read(event_fd_, &v, sizeof v);
  std::lock_guard<std::mutex> lk(events_mutex_);
  event_signalled_ = false;
  server_events out = std::move(pending_);
  pending_ = server_events{};
  if (dropped_logs_) {
    out.logs.push_back({log::level::warning, core_logger,
                        std::to_string(dropped_logs_) + " native log records dropped (queue full)", "-"});
    dropped_logs_ = 0;
  }
  return out;
}

server_events server::wait_events(int timeout_ms) {
  pollfd p{event_fd_, POLLIN, 0};
  int r;
  do {
    r = ::poll(&p, 1, timeout_ms);
  } while (r < 0 && errno == EINTR);
  return take_events();
}

void server::post_log(log::record r) {
  {
    std::lock_guard<std::mutex> lk(events_mutex_);
    if (pending_.logs.size() >= max_queued_logs) {
      ++dropped_logs_;
      return;
    }
    pending_.logs.push_back(std::move(r));
  }
  notify_events();
}

void server::begin_stop() {
  if (!acceptor_) return;
  stop_begun_ = true;
  // Stop accepting and ask every connection to finish, each on its own thread.
  // The signals stay ours until join(): a second stop signal cuts the stop short.
  threads_[0]->gate()->post([this] {
    stopping_ = true;
    boost::system::error_code ec;
    // close(), never shutdown(): a shared (Einhorn) listener must stay usable
    // by the other workers.
    acceptor_->close(ec);
  });
  for (auto& t : threads_)
    t->gate()->post([&t] { t->for_each([](connection_base& c) { c.shutdown(); }); });
}

std::size_t server::force_close(std::chrono::milliseconds wait) {
  std::size_t forced = open_.load();
  if (forced == 0) return 0;
  for (auto& t : threads_)
    t->gate()->post([&t] { t->for_each([](connection_base& c) { c.close(); }); });
  if (is_inline()) return forced;  // the caller's thread runs the loop: it cannot wait here
  std::unique_lock<std::mutex> lk(drained_mutex_);
  drained_.wait_for(lk, wait, [this] { return open_.load() == 0; });
  return forced;
}

std::size_t server::stop() {
  if (!acceptor_) return 0;
  begin_stop();
  {
    std::unique_lock<std::mutex> lk(drained_mutex_);
    if (drained_.wait_for(lk, opts_.stop_timeout, [this] { return open_.load() == 0; })) return 0;
  }
  return force_close();
}

int server::wait_signal(int timeout_ms) {
  std::unique_lock<std::mutex> lk(waiter_mutex_);
  auto ready = [this] { return !waiter_signals_.empty() || waiter_closed_; };
  if (timeout_ms < 0)
    waiter_cv_.wait(lk, ready);
  else
    waiter_cv_.wait_for(lk, std::chrono::milliseconds(timeout_ms), ready);
  if (waiter_signals_.empty()) return waiter_closed_ ? -1 : 0;
  int sig = waiter_signals_.front();
  waiter_signals_.pop_front();
  return sig;
}

void server::join() {
  {
    std::lock_guard<std::mutex> lk(waiter_mutex_);
    waiter_closed_ = true;
  }
  waiter_cv_.notify_all();
  for (auto& t : threads_) t->stop();
  if (signal_thread_) {
    // The signal_set belongs to its io_context: stop the thread, then reset.
    signal_thread_->stop();
  }
  // Hands the signals back (Asio restores their default actions), now
  // rather than at some later destruction, so the host can take them.
  signals_.reset();
}

server_stats server::stats() const { return {open_.load(), accepted_.load()}; }

}  // namespace baseplate
