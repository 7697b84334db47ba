#include "dispatch.hpp"

#include "io_thread.hpp"
#include "log.hpp"

#include <pybind11/pybind11.h>

#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <system_error>

namespace baseplate::python {
namespace py = pybind11;

namespace {
constexpr const char* dispatcher_capsule = "baseplate_serve._core.hub_dispatcher";
constexpr const char* inline_capsule = "baseplate_serve._core.inline_dispatcher";

/// Queues a job. On an I/O thread the consumer is woken once, at the end
/// of the event-loop round, so the requests of one round make one batch.
bool enqueue(job_queue& q, python_job job) {
  io_thread* t = io_thread::current();
  if (!t) return q.push(std::move(job));
  if (!q.push_quietly(std::move(job))) return false;
  thread_local bool flush_pending = false;
  if (!flush_pending) {
    flush_pending = true;
    t->at_end_of_round([&q] {
      flush_pending = false;
      q.notify();
    });
  }
  return true;
}

/// Worker greenlets call a plain PyCFunction bound to a capsule holding
/// the dispatcher, not a pybind11 method: app code switches greenlets, and
/// pybind11's per-call state must not be on the stack when it does (see
/// wsgi.cpp).
PyObject* run_ready_fn(PyObject* capsule, PyObject*) {
  auto* d = static_cast<hub_dispatcher*>(PyCapsule_GetPointer(capsule, dispatcher_capsule));
  if (!d) return nullptr;
  d->run_ready();
  Py_RETURN_NONE;
}
PyMethodDef run_ready_def = {"run_ready", run_ready_fn, METH_NOARGS,
                             "Serves the requests drain() made ready, until there are none."};

/// The hub's watcher on the reactor descriptor calls this plain function,
/// not a pybind11 method, for the same reason: it switches greenlets.
PyObject* run_io_fn(PyObject* capsule, PyObject* start) {
  auto* d = static_cast<inline_dispatcher*>(PyCapsule_GetPointer(capsule, inline_capsule));
  if (!d) return nullptr;
  try {
    d->run_io(start);
  } catch (py::error_already_set& e) {
    e.restore();
    return nullptr;
  }
  Py_RETURN_NONE;
}
PyMethodDef run_io_def = {"run_io", run_io_fn, METH_O,
                          "run_io(start): runs the core's ready I/O handlers, then the greenlets they made ready."};
}  // namespace

// -- shared

void dispatcher::run_one(python_job& job) {
  --live_->queued;
  ++live_->in_app;
  struct done {
    std::atomic<std::size_t>& n;
    ~done() { --n; }
  } guard{live_->in_app};
  try {
    run_(job);
  } catch (py::error_already_set& e) {
    // The runners answer app errors; a runner (thread or greenlet) must
    // outlive anything else, and a greenlet's parent is the hub.
    e.restore();
    PyErr_WriteUnraisable(nullptr);
  } catch (const std::exception& e) {
    log::write(log::level::error, "baseplate_serve", std::string("request failed: ") + e.what());
  }
}

void waiter::reset() {
  std::lock_guard<std::mutex> lk(m_);
  done_ = false;
  ec_ = {};
  data_.clear();
}

void waiter::complete(boost::system::error_code ec, std::string_view data) {
  {
    std::lock_guard<std::mutex> lk(m_);
    ec_ = ec;
    data_.assign(data.data(), data.size());
    done_ = true;
  }
  d_.completed(shared_from_this());
}

boost::system::error_code waiter::wait() {
  d_.park(*this);
  std::lock_guard<std::mutex> lk(m_);
  return ec_;
}

// -- threads

template <class F>
auto threads_dispatcher::without_gil(F&& f) -> decltype(f()) {
  py::gil_scoped_release nogil;
  return f();
}

bool threads_dispatcher::submit(python_job job) {
  ++live_->queued;
  if (enqueue(queue_, std::move(job))) return true;
  --live_->queued;
  return false;
}

std::shared_ptr<waiter> threads_dispatcher::make_waiter() {
  // One wait at a time per thread: reuse its waiter. Keyed by dispatcher,
  // so two servers in one process never share one.
  thread_local std::shared_ptr<waiter> mine;
  if (!mine || &mine->d_ != this) mine = std::make_shared<waiter>(*this);
  mine->reset();
  return mine;
}

void threads_dispatcher::park(waiter& w) {
  without_gil([&] {
    std::unique_lock<std::mutex> lk(w.m_);
    w.cv_.wait(lk, [&] { return w.done_; });
  });
}

void threads_dispatcher::completed(std::shared_ptr<waiter> w) { w->cv_.notify_one(); }

void threads_dispatcher::run_worker() {
  bool finished_one = false;
  for (;;) {
    auto job = queue_.try_pop(finished_one);
    if (!job) job = without_gil([this] { return queue_.pop_wait(); });
    if (!job) return;
    finished_one = true;
    run_one(*job);
  }
}

// -- gevent

gevent_dispatcher::gevent_dispatcher(job_runner run, std::shared_ptr<live_counters> live)
    : hub_dispatcher(std::move(run), std::move(live)) {
  queue_fd_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (queue_fd_ < 0) throw std::system_error(errno, std::generic_category(), "eventfd");
}

gevent_dispatcher::~gevent_dispatcher() {
  if (queue_fd_ >= 0) ::close(queue_fd_);
}

bool gevent_dispatcher::submit(python_job job) {
  ++live_->queued;
  if (enqueue(queue_, std::move(job))) return true;
  --live_->queued;
  return false;
}

void gevent_dispatcher::completed(std::shared_ptr<waiter> w) {
  enqueue(queue_, python_job{nullptr, nullptr, std::move(w)});
}

void gevent_dispatcher::drain(PyObject* start) {
  std::uint64_t v;
  [[maybe_unused]] auto n = ::read(queue_fd_, &v, sizeof v);
  while (auto job = queue_.try_pop_or_arm(queue_fd_)) {
    if (!job->resume) {
      ready_.push_back(std::move(*job));
      continue;
    }
    waiter& w = *job->resume;
    if (!w.parked_) continue;  // completed before the greenlet parked: park() saw done_
    py::object gw = py::reinterpret_steal<py::object>(w.parked_);
    w.parked_ = nullptr;
    // Switch from the hub's own loop, outside any call frame of ours.
    static py::object& run_callback =
        *new py::object(py::module_::import("gevent").attr("get_hub")().attr("loop").attr("run_callback"));
    run_callback(gw.attr("switch"), py::none());
  }
  start_ready(start);
}

// -- shared by the gevent dispatchers

std::shared_ptr<waiter> hub_dispatcher::make_waiter() {
  // Many greenlets share the hub's thread: one waiter per wait.
  return std::make_shared<waiter>(*this);
}

void hub_dispatcher::park(waiter& w) {
  {
    std::lock_guard<std::mutex> lk(w.m_);
    if (w.done_) return;
  }
  // Park this greenlet; the hub resumes it when the completion arrives.
  // The resume runs on the hub, this thread, so parked_ needs no lock.
  // Leaked on purpose: no Python object may be released after finalization.
  static py::object& waiter_class = *new py::object(py::module_::import("gevent.hub").attr("Waiter"));
  py::object gw = waiter_class();
  w.parked_ = gw.inc_ref().ptr();
  gw.attr("get")();
}

void hub_dispatcher::start_ready(PyObject* start) {
  while (!ready_.empty()) {
    PyObject* r = PyObject_CallNoArgs(start);
    if (!r) throw py::error_already_set();
    Py_DECREF(r);
  }
}

PyObject* hub_dispatcher::ready_runner() {
  PyObject* capsule = PyCapsule_New(this, dispatcher_capsule, nullptr);
  if (!capsule) throw py::error_already_set();
  PyObject* fn = PyCFunction_New(&run_ready_def, capsule);
  Py_DECREF(capsule);
  if (!fn) throw py::error_already_set();
  return fn;
}

void hub_dispatcher::run_ready() {
  while (!ready_.empty()) {
    python_job job = std::move(ready_.front());
    ready_.pop_front();
    PyObject* ctx = PyContext_New();
    if (!ctx || PyContext_Enter(ctx) < 0) {
      Py_XDECREF(ctx);
      PyErr_WriteUnraisable(nullptr);
      continue;
    }
    run_one(job);
    if (PyContext_Exit(ctx) < 0) PyErr_WriteUnraisable(nullptr);
    Py_DECREF(ctx);
  }
}

// -- inline

bool inline_dispatcher::submit(python_job job) {
  // In poll(), on the hub's thread: queue only (see the class comment).
  if (closed_) return false;
  ++live_->queued;
  ready_.push_back(std::move(job));
  return true;
}

void inline_dispatcher::completed(std::shared_ptr<waiter> w) {
  // In poll(), or (an error path) from the worker that is about to park:
  // park() sees done_ then; run_io skips a waiter nobody parked on.
  resumed_.push_back(std::move(w));
}

void inline_dispatcher::run_io(PyObject* start) {
  // Bounded: a stream of new work must not keep other greenlets (timers,
  // gevent sockets) off the hub. The reactor descriptor stays readable
  // for what is left, so the hub comes back here.
  constexpr int max_rounds = 4;
  for (int round = 0; round < max_rounds; ++round) {
    std::size_t handlers = loop_.poll();
    if (handlers == 0 && resumed_.empty() && ready_.empty()) return;
    std::vector<std::shared_ptr<waiter>> resumed;
    resumed.swap(resumed_);
    for (auto& w : resumed) {
      if (!w->parked_) continue;  // completed before its greenlet parked
      PyObject* gw = w->parked_;
      w->parked_ = nullptr;
      // gevent's Waiter.switch runs on the hub (here), and reports the
      // greenlet's errors itself.
      static PyObject* switch_name = PyUnicode_InternFromString("switch");
      PyObject* r = PyObject_CallMethodOneArg(gw, switch_name, Py_None);
      Py_DECREF(gw);
      if (!r) throw py::error_already_set();
      Py_DECREF(r);
    }
    start_ready(start);
  }
}

PyObject* inline_dispatcher::io_runner() {
  PyObject* capsule = PyCapsule_New(this, inline_capsule, nullptr);
  if (!capsule) throw py::error_already_set();
  PyObject* fn = PyCFunction_New(&run_io_def, capsule);
  Py_DECREF(capsule);
  if (!fn) throw py::error_already_set();
  return fn;
}

namespace {
struct trace_vars {
  PyObject* trace;
  PyObject* span;
};
// Leaked on purpose: no Python object may be released after finalization.
const trace_vars& vars() {
  static trace_vars v = [] {
    py::module_ m = py::module_::import("baseplate_serve._trace");
    return trace_vars{py::object(m.attr("trace_id_var")).release().ptr(),
                      py::object(m.attr("span_id_var")).release().ptr()};
  }();
  return v;
}

PyObject* set_var(PyObject* var, std::string_view value) {
  if (value.empty()) return nullptr;
  PyObject* s = PyUnicode_DecodeLatin1(value.data(), static_cast<Py_ssize_t>(value.size()), nullptr);
  if (!s) throw py::error_already_set();
  PyObject* token = PyContextVar_Set(var, s);
  Py_DECREF(s);
  if (!token) throw py::error_already_set();
  return token;
}
}  // namespace

trace_scope::trace_scope(std::string_view trace_id, std::string_view span_id) {
  trace_token_ = set_var(vars().trace, trace_id);
  span_token_ = set_var(vars().span, span_id);
}

trace_scope::~trace_scope() {
  if (trace_token_) {
    PyContextVar_Reset(vars().trace, trace_token_);
    Py_DECREF(trace_token_);
  }
  if (span_token_) {
    PyContextVar_Reset(vars().span, span_token_);
    Py_DECREF(span_token_);
  }
}

}  // namespace baseplate::python
