#include "dispatch.hpp"

#include "io_thread.hpp"

#include <pybind11/pybind11.h>

namespace baseplate::python {
namespace py = pybind11;

namespace {
dispatch_mode mode = dispatch_mode::threads;
job_queue* queue = nullptr;
thread_local std::shared_ptr<waiter> thread_waiter;
}  // namespace

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

void set_dispatch(dispatch_mode m, job_queue* q) {
  mode = m;
  queue = q;
}

dispatch_mode current_dispatch() { return mode; }

std::shared_ptr<waiter> waiter::make() {
  if (mode == dispatch_mode::threads) {
    // One at a time per thread: reuse it.
    if (!thread_waiter) thread_waiter = std::make_shared<waiter>();
    thread_waiter->reset();
    return thread_waiter;
  }
  // Many greenlets share the hub's thread: one waiter per wait.
  return std::make_shared<waiter>();
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
  if (mode == dispatch_mode::gevent)
    enqueue(*queue, python_job{nullptr, nullptr, shared_from_this()});
  else
    cv_.notify_one();
}

boost::system::error_code waiter::wait() {
  if (mode == dispatch_mode::threads) {
    py::gil_scoped_release nogil;
    std::unique_lock<std::mutex> lk(m_);
    cv_.wait(lk, [this] { return done_; });
    return ec_;
  }
  {
    std::lock_guard<std::mutex> lk(m_);
    if (done_) return ec_;
  }
  // Park this greenlet; the hub resumes it when the completion arrives.
  // resume() runs on the hub, this thread, so parked_ needs no lock.
  // Leaked on purpose: no Python object may be released after finalization.
  static py::object& waiter_class = *new py::object(py::module_::import("gevent.hub").attr("Waiter"));
  py::object w = waiter_class();
  parked_ = w.inc_ref().ptr();
  w.attr("get")();
  std::lock_guard<std::mutex> lk(m_);
  return ec_;
}

void waiter::resume() {
  if (!parked_) return;  // completed before the greenlet parked: wait() saw done_
  py::object w = py::reinterpret_steal<py::object>(parked_);
  parked_ = nullptr;
  // Switch from the hub's own loop, outside any call frame of ours.
  static py::object& run_callback =
      *new py::object(py::module_::import("gevent").attr("get_hub")().attr("loop").attr("run_callback"));
  run_callback(w.attr("switch"), py::none());
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
