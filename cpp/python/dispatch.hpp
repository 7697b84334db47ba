#pragma once
/// How Python work is run: the jobs the I/O threads queue, and how a Python
/// request waits for the network. Two modes:
/// - threads: Python worker threads take jobs; a wait blocks the thread
///   with the GIL released.
/// - gevent: the hub on the main thread takes jobs (one eventfd wake-up per
///   batch) and runs each in a greenlet; a wait parks the greenlet, and the
///   I/O thread's completion comes back through the same queue.
/// The I/O threads never touch Python in either mode.
#include <baseplate/http/exchange.hpp>
#include "thrift/call.hpp"
#include "work_queue.hpp"

#include <boost/system/error_code.hpp>

#include <Python.h>

#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>

namespace baseplate::python {

class waiter;

/// Work for Python: an HTTP exchange, a Thrift call, or (gevent mode) a
/// waiter whose operation completed.
struct python_job {
  std::shared_ptr<http::exchange> http;
  std::shared_ptr<thrift::call> thrift;
  std::shared_ptr<waiter> resume;
};

using job_queue = work_queue<python_job>;

enum class dispatch_mode { threads, gevent };

/// Queues a job. On an I/O thread the consumer is woken once, at the end
/// of the event-loop round, so the requests of one round make one batch.
bool enqueue(job_queue& q, python_job job);

/// Set once, before serving.
void set_dispatch(dispatch_mode mode, job_queue* queue);
dispatch_mode current_dispatch();

/// One network operation a Python request waits for.
class waiter : public std::enable_shared_from_this<waiter> {
 public:
  /// A waiter for the calling thread or greenlet (GIL held).
  static std::shared_ptr<waiter> make();

  /// Called on the I/O thread.
  void complete(boost::system::error_code ec, std::string_view data = {});
  /// Waits for complete() (GIL held; released or yielded while waiting).
  boost::system::error_code wait();
  /// The bytes complete() delivered.
  std::string& data() { return data_; }
  /// gevent mode, on the hub with the GIL: wakes the parked greenlet.
  void resume();

 private:
  void reset();

  std::mutex m_;
  std::condition_variable cv_;
  bool done_ = false;
  boost::system::error_code ec_;
  std::string data_;
  PyObject* parked_ = nullptr;  ///< gevent mode: the gevent Waiter of the parked greenlet (owned ref)
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
