#pragma once
/// Hands work from the I/O threads to a pool of worker threads without
/// waking a thread per item.
///
/// A worker is woken only when no worker is running or about to run: while
/// one is busy it takes the next item itself, so under load items flow with
/// no wake-ups at all. A watchdog thread notices a stall (items waiting and
/// none taken for `stall`, e.g. every running worker blocked in a sleep) and
/// only then wakes more workers, one per waiting item. Producers never
/// block on consumers and never touch the GIL. A consumer that runs its
/// own event loop (try_pop_or_arm) has no workers to wake: it builds the
/// queue without a watchdog, and no thread is started.
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <mutex>
#include <optional>
#include <thread>

#include <unistd.h>

namespace baseplate {

template <class T>
class work_queue {
 public:
  /// `stall`: how long items may wait untaken before the watchdog wakes
  /// more workers; nullopt: no watchdog thread (an event-loop consumer).
  explicit work_queue(std::optional<std::chrono::microseconds> stall = std::chrono::milliseconds(2))
      : stall_(stall.value_or(std::chrono::microseconds::zero())) {
    if (stall) watchdog_ = std::thread([this] { watch(); });
  }
  work_queue(const work_queue&) = delete;
  work_queue& operator=(const work_queue&) = delete;
  ~work_queue() {
    close();
    if (watchdog_.joinable()) watchdog_.join();
  }

  /// Whether a watchdog thread runs (for tests and diagnostics).
  bool has_watchdog() const { return watchdog_.joinable(); }

  /// Adds an item (any thread) and wakes a consumer if one is needed.
  /// Returns false once closed.
  bool push(T item) {
    if (!push_quietly(std::move(item))) return false;
    notify();
    return true;
  }

  /// Adds an item without waking anyone: a producer that adds several in
  /// one round (an I/O thread's event-loop round) calls notify() once after.
  bool push_quietly(T item) {
    std::lock_guard<std::mutex> lk(m_);
    if (closed_) return false;
    items_.push_back(std::move(item));
    return true;
  }

  /// Wakes what the queued items need: the armed event loop (one eventfd
  /// write per batch), or one sleeping worker if none is running, or the
  /// stall watchdog.
  void notify() {
    std::unique_lock<std::mutex> lk(m_);
    if (items_.empty()) return;
    if (armed_fd_ >= 0) {
      int fd = armed_fd_;
      armed_fd_ = -1;
      lk.unlock();
      std::uint64_t one = 1;
      [[maybe_unused]] auto n = ::write(fd, &one, sizeof one);
      return;
    }
    if (running_ + notified_ == 0 && sleeping_ > notified_) {
      ++notified_;
      lk.unlock();
      workers_cv_.notify_one();
      return;
    }
    if (watchdog_idle_ && watchdog_.joinable()) {
      watchdog_idle_ = false;
      lk.unlock();
      watchdog_cv_.notify_one();  // it sleeps while the queue is empty
    }
  }

  /// Takes the next item if one is ready; never blocks. `finished_one`:
  /// the caller just finished an item it took earlier.
  std::optional<T> try_pop(bool finished_one) {
    std::lock_guard<std::mutex> lk(m_);
    if (finished_one) --running_;
    return take_locked();
  }

  /// For a consumer that runs its own event loop (the gevent hub): takes
  /// the next item, or, when there is none, arms `event_fd` to be written
  /// (an eventfd) by the next push. Items are not counted as running.
  std::optional<T> try_pop_or_arm(int event_fd) {
    std::lock_guard<std::mutex> lk(m_);
    if (items_.empty()) {
      if (!closed_) armed_fd_ = event_fd;
      return std::nullopt;
    }
    T item = std::move(items_.front());
    items_.pop_front();
    ++taken_;
    return item;
  }

  /// Waits for the next item; nullopt once closed and drained. Call with
  /// no lock the producers need (the bridge releases the GIL first).
  std::optional<T> pop_wait() {
    std::unique_lock<std::mutex> lk(m_);
    while (items_.empty() && !closed_) {
      ++sleeping_;
      workers_cv_.wait(lk);
      --sleeping_;
      if (notified_) --notified_;
    }
    return take_locked();
  }

  /// Wakes every waiter; pop_wait returns nullopt once the queue is empty.
  void close() {
    {
      std::lock_guard<std::mutex> lk(m_);
      closed_ = true;
    }
    workers_cv_.notify_all();
    watchdog_cv_.notify_all();
  }

  /// Items waiting and items being run, for diagnostics.
  std::pair<std::size_t, std::size_t> sizes() const {
    std::lock_guard<std::mutex> lk(m_);
    return {items_.size(), running_};
  }

 private:
  std::optional<T> take_locked() {
    if (items_.empty()) return std::nullopt;
    T item = std::move(items_.front());
    items_.pop_front();
    ++running_;
    ++taken_;
    return item;
  }

  void watch() {
    std::unique_lock<std::mutex> lk(m_);
    while (!closed_) {
      if (items_.empty()) {
        watchdog_idle_ = true;
        watchdog_cv_.wait(lk);
        watchdog_idle_ = false;
        continue;
      }
      std::uint64_t before = taken_;
      watchdog_cv_.wait_for(lk, stall_);
      if (closed_ || items_.empty() || taken_ != before) continue;
      // Nothing was taken for a whole stall period: the running workers are
      // blocked. Wake one idle worker per waiting item.
      std::size_t idle = sleeping_ > notified_ ? sleeping_ - notified_ : 0;
      std::size_t wake = std::min(idle, items_.size());
      notified_ += wake;
      for (std::size_t i = 0; i < wake; ++i) workers_cv_.notify_one();
    }
  }

  const std::chrono::microseconds stall_;
  mutable std::mutex m_;
  std::condition_variable workers_cv_;
  std::condition_variable watchdog_cv_;
  std::deque<T> items_;
  std::size_t sleeping_ = 0;  ///< workers waiting in pop_wait
  std::size_t notified_ = 0;  ///< of those, woken but not yet running
  std::size_t running_ = 0;   ///< items taken and not finished
  std::uint64_t taken_ = 0;   ///< items taken so far (the watchdog's progress mark)
  int armed_fd_ = -1;         ///< eventfd to write on the next push, or -1
  bool watchdog_idle_ = false;  ///< the watchdog waits for the queue to fill
  bool closed_ = false;
  std::thread watchdog_;
};

}  // namespace baseplate
