#pragma once
/// Dispatchers: how Python requests run, how a Python request waits for the
/// network, and how that stops. One object per server, no process-global
/// mode: a waiter gets its dispatcher from the object that made it.
///
/// - threads_dispatcher: Python worker threads take jobs from a work_queue
///   (with its stall watchdog); a wait blocks the thread with the GIL
///   released.
/// - gevent_dispatcher: the hub on the main thread takes jobs (one eventfd
///   wake-up per batch, no watchdog thread) and runs them in worker
///   greenlets; a wait parks the greenlet, and the I/O thread's completion
///   comes back through the same queue.
///
/// - inline_dispatcher (io_threads = 0): the same greenlets, but the hub
///   also runs the core's event loop; no I/O thread at all.
///
/// The I/O threads never touch Python in any of them.
#include <baseplate/http/exchange.hpp>
#include "server.hpp"
#include "thrift/call.hpp"
#include "work_queue.hpp"

#include <boost/system/error_code.hpp>

#include <Python.h>

#include <atomic>
#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

namespace baseplate::python {

class waiter;

/// Work for Python: an HTTP exchange, a Thrift call, or (gevent) a waiter
/// whose operation completed.
struct python_job {
  std::shared_ptr<http::exchange> http;
  std::shared_ptr<thrift::call> thrift;
  std::shared_ptr<waiter> resume;
};

using job_queue = work_queue<python_job>;

/// Runs one request's job (GIL held): the app binding's part.
using job_runner = std::function<void(python_job&)>;

class dispatcher {
 public:
  dispatcher(job_runner run, std::shared_ptr<live_counters> live) : run_(std::move(run)), live_(std::move(live)) {}
  virtual ~dispatcher() = default;
  dispatcher(const dispatcher&) = delete;
  dispatcher& operator=(const dispatcher&) = delete;

  /// "threads", "gevent" or "inline".
  virtual const char* name() const = 0;
  /// Whether requests may run on several threads at once (wsgi.multithread).
  virtual bool multithread() const = 0;

  /// I/O thread: hands a request to Python; false once closed (the caller
  /// answers 503 / fails the call). Never blocks, never takes the GIL.
  virtual bool submit(python_job job) = 0;

  /// GIL held: a waiter for the calling thread or greenlet.
  virtual std::shared_ptr<waiter> make_waiter() = 0;
  /// GIL held: returns once `w` completed (GIL released, or greenlet parked).
  virtual void park(waiter& w) = 0;
  /// I/O thread: `w`'s operation completed; wake whoever parked on it.
  virtual void completed(std::shared_ptr<waiter> w) = 0;

  /// No more requests: queued ones are still run, then the runners return.
  virtual void close() = 0;

  /// Requests in the app now, and waiting for it.
  std::size_t running() const { return live_->in_app.load(); }
  virtual std::size_t queued() const = 0;

 protected:
  /// Runs one job, counted as in the app; app errors never escape.
  void run_one(python_job& job);

  job_runner run_;
  std::shared_ptr<live_counters> live_;
};

/// Python worker threads.
class threads_dispatcher final : public dispatcher {
 public:
  using dispatcher::dispatcher;
  const char* name() const override { return "threads"; }
  bool multithread() const override { return true; }
  bool submit(python_job job) override;
  std::shared_ptr<waiter> make_waiter() override;
  void park(waiter& w) override;
  void completed(std::shared_ptr<waiter> w) override;
  void close() override { queue_.close(); }
  std::size_t queued() const override { return queue_.sizes().first; }

  /// The body of each worker thread: takes jobs until close(). The GIL is
  /// held while Python runs and released only to wait.
  void run_worker();

 private:
  /// The one place this dispatcher releases the GIL.
  template <class F>
  auto without_gil(F&& f) -> decltype(f());

  job_queue queue_;  ///< with its stall watchdog
};

/// What both gevent dispatchers share: requests run in reused worker
/// greenlets on the hub's thread, a wait parks the greenlet on a gevent
/// Waiter, and the hub resumes it.
class hub_dispatcher : public dispatcher {
 public:
  using dispatcher::dispatcher;
  bool multithread() const override { return false; }
  std::shared_ptr<waiter> make_waiter() override;
  void park(waiter& w) override;

  /// The callable worker greenlets loop on (see run_ready).
  PyObject* ready_runner();
  /// In a worker greenlet: serves ready jobs, each in a fresh contextvars
  /// context, until none are left.
  void run_ready();

 protected:
  /// Calls `start()` (which switches to a worker greenlet) while jobs are ready.
  void start_ready(PyObject* start);

  std::deque<python_job> ready_;  ///< not yet started (hub thread only)
};

/// Greenlets on the gevent hub (the main thread), fed by I/O threads.
class gevent_dispatcher final : public hub_dispatcher {
 public:
  gevent_dispatcher(job_runner run, std::shared_ptr<live_counters> live);
  ~gevent_dispatcher() override;
  const char* name() const override { return "gevent"; }
  bool submit(python_job job) override;
  void completed(std::shared_ptr<waiter> w) override;
  void close() override { queue_.close(); }
  std::size_t queued() const override { return queue_.sizes().first + ready_.size(); }

  /// Readable when jobs or completions are waiting: the hub watches it.
  int queue_fd() const { return queue_fd_; }
  /// On the hub when queue_fd is readable: resumes the greenlets whose
  /// operations completed and makes new jobs ready, then calls `start()`
  /// while any are ready. start() switches to a worker greenlet, which
  /// serves ready jobs (run_ready) until none are left or one waits; then
  /// the hub is back here. A batch of requests costs one switch to a worker
  /// and back, not two per request.
  void drain(PyObject* start);

 private:
  job_queue queue_{std::nullopt};  ///< no watchdog: the hub is the only consumer
  int queue_fd_ = -1;              ///< the hub's wake-up for queue_
};

/// io_threads = 0: no I/O thread. The gevent hub runs the core's event loop
/// itself (an io watcher on the loop's reactor descriptor calls run_io),
/// and requests run in worker greenlets as with gevent_dispatcher; no
/// request, completion or wake-up crosses a thread.
///
/// One rule makes this safe: no greenlet switch happens inside the loop's
/// poll(). Asio keeps a thread-local stack of the loops running on a thread,
/// with entries on the C stack, and greenlets share that stack: a worker
/// started from inside a handler could overwrite the entry, or post into a
/// poll that already returned. So handlers only queue (submit() and
/// completed() fill ready_ and resumed_), and run_io switches to greenlets
/// after poll() has returned. A worker that writes a response posts to
/// the loop from outside it, which makes the reactor descriptor readable.
class inline_dispatcher final : public hub_dispatcher {
 public:
  inline_dispatcher(job_runner run, std::shared_ptr<live_counters> live, io_thread& loop)
      : hub_dispatcher(std::move(run), std::move(live)), loop_(loop) {}
  const char* name() const override { return "inline"; }
  bool submit(python_job job) override;
  void completed(std::shared_ptr<waiter> w) override;
  void close() override { closed_ = true; }
  std::size_t queued() const override { return ready_.size(); }

  /// Readable while the loop has work: the hub watches it.
  int reactor_fd() const { return loop_.reactor_fd(); }
  /// On the hub when reactor_fd is readable: runs the loop's ready handlers
  /// (poll), then resumes the greenlets whose operations completed and
  /// starts workers for new requests; again while that made more work
  /// (their writes), a few rounds at most, so other greenlets get the hub.
  void run_io(PyObject* start);
  /// run_io as a plain callable taking `start` (for the hub's watcher).
  PyObject* io_runner();

 private:
  io_thread& loop_;
  std::vector<std::shared_ptr<waiter>> resumed_;  ///< completed in poll(), not yet switched to
  bool closed_ = false;
};

/// One network operation a Python request waits for.
class waiter : public std::enable_shared_from_this<waiter> {
 public:
  explicit waiter(dispatcher& d) : d_(d) {}

  /// Called on the I/O thread.
  void complete(boost::system::error_code ec, std::string_view data = {});
  /// Waits for complete() (GIL held; released or yielded while waiting).
  boost::system::error_code wait();
  /// The bytes complete() delivered.
  std::string& data() { return data_; }

 private:
  friend class threads_dispatcher;
  friend class hub_dispatcher;
  friend class gevent_dispatcher;
  friend class inline_dispatcher;
  void reset();

  dispatcher& d_;
  std::mutex m_;
  std::condition_variable cv_;
  bool done_ = false;
  boost::system::error_code ec_;
  std::string data_;
  PyObject* parked_ = nullptr;  ///< gevent: the gevent Waiter of the parked greenlet (owned ref)
};

/// Sets baseplate_serve._trace's context variables for one request (GIL
/// held); an empty id leaves the default ("-").
class trace_scope {
 public:
  trace_scope(std::string_view trace_id, std::string_view span_id);
  ~trace_scope();
  trace_scope(const trace_scope&) = delete;
  trace_scope& operator=(const trace_scope&) = delete;

 private:
  PyObject* trace_token_ = nullptr;
  PyObject* span_token_ = nullptr;
};

}  // namespace baseplate::python
