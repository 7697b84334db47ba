/// The _core extension: the only place that includes pybind11 besides the
/// adapters in this folder. It builds a core server for a Python app, feeds
/// Python worker threads through a work_queue, and hands signals and native
/// log records to the Python main thread.
#include "dispatch.hpp"
#include "exit_deadline.hpp"
#include "http/connection.hpp"
#include "plugin_loader.hpp"
#include "server.hpp"
#include "thrift/processor_handler.hpp"
#include "thrift.hpp"
#include "thrift/connection.hpp"
#include "work_queue.hpp"
#include "wsgi.hpp"

#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <sys/eventfd.h>
#include <unistd.h>

#include <atomic>
#include <deque>
#include <memory>
#include <optional>

namespace py = pybind11;
using namespace baseplate;
using python::job_queue;
using python::python_job;

namespace {

/// The core's view of a Python WSGI app: queue the exchange, never block.
class queued_http_handler final : public http::handler {
 public:
  explicit queued_http_handler(job_queue& q) : q_(q) {}
  void handle(std::shared_ptr<http::exchange> ex) override {
    if (python::enqueue(q_, python_job{ex, nullptr, nullptr})) return;
    http::response_part part;
    part.head = http::response_head{503, {}, {{"Content-Type", "text/plain"}}};
    part.body = "Service Unavailable\n";
    part.last = true;
    ex->write(std::move(part), nullptr);
  }

 private:
  job_queue& q_;
};

/// The core's view of a Python TProcessor: queue the call, never block.
class queued_thrift_handler final : public thrift::handler {
 public:
  explicit queued_thrift_handler(job_queue& q) : q_(q) {}
  void handle(std::shared_ptr<thrift::call> c) override {
    if (!python::enqueue(q_, python_job{nullptr, c, nullptr})) c->fail();
  }

 private:
  job_queue& q_;
};

/// The core's options from a dict keyed exactly as the table (INI names;
/// timespans in milliseconds): a key the table has no core row for is an
/// error, never dropped.
server_options parse_options(const py::dict& d) {
  server_options o;
  for (auto item : d) {
    auto key = item.first.cast<std::string>();
    if (!py::isinstance<py::int_>(item.second))
      throw py::type_error("server option " + key + ": expected an int (milliseconds for timespans)");
    set_option(o, key, item.second.cast<std::int64_t>());
  }
  return o;
}

/// The table, for the Python side: one dict per option.
py::list option_table() {
  static const char* const kinds[] = {"count", "bytes", "timespan", "flag", "choice", "text"};
  py::list rows;
  for (const auto& row : server_option_table) {
    py::dict r;
    r["key"] = row.key;
    r["kind"] = kinds[static_cast<int>(row.kind)];
    r["user"] = row.user == option_user::core ? "core" : "python";
    r["default"] = row.default_value;
    r["min"] = row.min;
    r["max"] = row.max;
    r["zero"] = row.zero;
    r["default_text"] = row.default_text;
    r["choices"] = row.choices;
    r["doc"] = row.doc;
    rows.append(std::move(r));
  }
  return rows;
}

class py_server;

/// gevent mode: worker greenlets call a plain PyCFunction bound to a
/// capsule holding the server, not a pybind11 method: app code switches
/// greenlets, and pybind11's per-call state must not be on the stack when
/// it does (see wsgi.cpp).
PyObject* run_ready_fn(PyObject* capsule, PyObject*);
PyMethodDef run_ready_def = {"run_ready", run_ready_fn, METH_NOARGS,
                             "Serves the requests drain() made ready, until there are none."};
constexpr const char* server_capsule = "baseplate_serve._core.Server";

/// A core server serving one Python app: a WSGI callable ("wsgi") or a
/// Thrift TProcessor ("thrift"), dispatched to Python worker threads
/// ("threads") or to greenlets on the gevent hub ("gevent").
class py_server {
 public:
  py_server(const py::dict& options, const std::string& protocol, const std::string& dispatch)
      : http_handler_(queue_),
        thrift_handler_(queue_),
        server_(parse_options(options), make_factory(protocol)) {
    if (dispatch == "gevent") {
      mode_ = python::dispatch_mode::gevent;
      queue_fd_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
      if (queue_fd_ < 0) throw std::system_error(errno, std::generic_category(), "eventfd");
    } else if (dispatch != "threads") {
      throw std::invalid_argument("unknown dispatch " + dispatch);
    }
    python::set_dispatch(mode_, &queue_);
    // From now on native records (a native app's factory included) queue
    // for the host's logging.
    log::set_sink([this](log::record r) { server_.post_log(std::move(r)); });
  }

  void set_log_level(int level) { log::set_threshold(static_cast<log::level>(level)); }

  ~py_server() {
    log::set_sink(nullptr);
    if (queue_fd_ >= 0) ::close(queue_fd_);
  }

  void set_wsgi_app(py::object app, py::object file_wrapper, std::string server_name, std::string server_port) {
    wsgi_.emplace(python::wsgi_settings{std::move(app), std::move(file_wrapper), std::move(server_name),
                                        std::move(server_port), mode_ == python::dispatch_mode::threads});
  }

  void set_thrift_processor(py::object processor) { thrift_.emplace(std::move(processor)); }

  /// Serves a native app: requests go straight from the I/O threads to it,
  /// never through Python. Returns "http" or "thrift", what it provides.
  std::string set_native_app(const std::string& path, const std::string& factory, const py::dict& app_config) {
    boost::property_tree::ptree config;
    for (auto item : app_config) config.put(item.first.cast<std::string>(), item.second.cast<std::string>());
    plugin_ = std::make_unique<loaded_plugin>(path, factory, config);
    if (plugin_->app().http) {
      http_target_ = plugin_->app().http.get();
      return "http";
    }
    native_thrift_ = std::make_unique<thrift::processor_handler>(plugin_->app().thrift, plugin_->name());
    thrift_target_ = native_thrift_.get();
    return "thrift";
  }

  void adopt_listener(int fd) { server_.adopt_listener(fd); }

  void start() {
    if (!wsgi_ && !thrift_ && !plugin_) throw std::logic_error("no app set");
    server_.start();
  }

  /// The body of each Python worker thread (threads mode). The GIL is held
  /// while Python runs and released only to wait for work.
  void run_worker() {
    bool finished_one = false;
    for (;;) {
      auto job = queue_.try_pop(finished_one);
      if (!job) {
        py::gil_scoped_release nogil;
        job = queue_.pop_wait();
      }
      if (!job) return;
      finished_one = true;
      try {
        run_job(*job);
      } catch (py::error_already_set& e) {
        // The runners answer app errors; a worker must outlive anything else.
        e.restore();
        PyErr_WriteUnraisable(nullptr);
      } catch (const std::exception& e) {
        log::write(log::level::error, "baseplate_serve", std::string("request failed: ") + e.what());
      }
    }
  }

  void run_job(python_job& job) {
    ++running_;
    struct done {
      std::atomic<std::size_t>& n;
      ~done() { --n; }
    } guard{running_};
    if (job.http)
      wsgi_->run(std::move(job.http));
    else if (job.thrift)
      thrift_->run(std::move(job.thrift));
  }

  /// gevent mode, called by the hub when queue_fd is readable: resumes the
  /// greenlets whose operations completed and makes new jobs ready, then
  /// calls `start()` while any are ready. start() switches to a worker
  /// greenlet, which serves ready jobs (run_ready) until none are left or
  /// one waits; then the hub is back here. So a batch of requests costs one
  /// switch to a worker and back, not two per request. Drains the whole
  /// batch; the next push re-arms the eventfd.
  void drain(py::object start) {
    std::uint64_t v;
    [[maybe_unused]] auto n = ::read(queue_fd_, &v, sizeof v);
    while (auto job = queue_.try_pop_or_arm(queue_fd_)) {
      if (job->resume)
        job->resume->resume();
      else
        ready_.push_back(std::move(*job));
    }
    while (!ready_.empty()) start();
  }

  /// gevent mode: the callable worker greenlets loop on (see run_ready).
  py::object ready_runner() {
    PyObject* capsule = PyCapsule_New(this, server_capsule, nullptr);
    if (!capsule) throw py::error_already_set();
    PyObject* fn = PyCFunction_New(&run_ready_def, capsule);
    Py_DECREF(capsule);
    if (!fn) throw py::error_already_set();
    return py::reinterpret_steal<py::object>(fn);
  }

  /// gevent mode, in a worker greenlet: serves ready jobs one after the
  /// other, each in a fresh contextvars context, until none are left. A job
  /// that waits switches to the hub; it resumes here later.
  void run_ready() {
    while (!ready_.empty()) {
      python_job job = std::move(ready_.front());
      ready_.pop_front();
      PyObject* ctx = PyContext_New();
      if (!ctx || PyContext_Enter(ctx) < 0) {
        Py_XDECREF(ctx);
        PyErr_WriteUnraisable(nullptr);
        continue;
      }
      // The greenlet's parent is the hub: nothing may escape to it. The
      // runners answer app errors themselves; what reaches here is reported.
      try {
        run_job(job);
      } catch (py::error_already_set& e) {
        e.restore();
        PyErr_WriteUnraisable(nullptr);
      } catch (const std::exception& e) {
        log::write(log::level::error, "baseplate_serve", std::string("request failed: ") + e.what());
      }
      if (PyContext_Exit(ctx) < 0) PyErr_WriteUnraisable(nullptr);
      Py_DECREF(ctx);
    }
  }

  py::tuple events(int timeout_ms) {
    server_events ev;
    {
      py::gil_scoped_release nogil;
      ev = timeout_ms == 0 ? server_.take_events() : server_.wait_events(timeout_ms);
    }
    py::list logs;
    for (auto& r : ev.logs)
      logs.append(py::make_tuple(static_cast<int>(r.lvl), r.logger, r.message, r.trace_id));
    return py::make_tuple(ev.stop ? ev.stop_signal : 0, ev.dump, logs);
  }

  std::size_t stop() {
    py::gil_scoped_release nogil;
    return server_.stop();
  }

  void begin_stop() { server_.begin_stop(); }

  std::size_t force_close() {
    py::gil_scoped_release nogil;
    return server_.force_close();
  }

  void close_queue() { queue_.close(); }

  void join() {
    py::gil_scoped_release nogil;
    server_.join();
    log::set_sink(nullptr);
  }

  py::dict stats() {
    auto s = server_.stats();
    auto queued = queue_.sizes().first;
    py::dict d;
    d["open_connections"] = s.open_connections;
    d["accepted"] = s.accepted;
    d["queued"] = queued;
    d["running"] = running_.load();
    return d;
  }

  int event_fd() const { return server_.event_fd(); }
  int queue_fd() const { return queue_fd_; }

 private:
  connection_factory make_factory(const std::string& protocol) {
    if (protocol == "wsgi")
      return [this](stream_socket s, io_thread& t) -> std::shared_ptr<connection_base> {
        return std::make_shared<http::connection>(std::move(s), t, *http_target_, server_.options());
      };
    if (protocol == "thrift")
      return [this](stream_socket s, io_thread& t) -> std::shared_ptr<connection_base> {
        return std::make_shared<thrift::connection>(std::move(s), t, *thrift_target_, server_.options());
      };
    throw std::invalid_argument("unknown protocol " + protocol);
  }

  job_queue queue_;
  std::atomic<std::size_t> running_{0};  ///< requests in the app now (both modes)
  python::dispatch_mode mode_ = python::dispatch_mode::threads;
  std::deque<python_job> ready_;  ///< gevent mode: jobs drained, not yet started (hub thread only)
  int queue_fd_ = -1;  ///< gevent mode: the hub's wake-up for queue_
  queued_http_handler http_handler_;
  queued_thrift_handler thrift_handler_;
  std::unique_ptr<loaded_plugin> plugin_;
  std::unique_ptr<thrift::processor_handler> native_thrift_;
  http::handler* http_target_ = &http_handler_;        ///< the Python app's queue, or a native app
  thrift::handler* thrift_target_ = &thrift_handler_;  ///< likewise
  std::optional<python::wsgi_runner> wsgi_;
  std::optional<python::thrift_runner> thrift_;
  server server_;
};

PyObject* run_ready_fn(PyObject* capsule, PyObject*) {
  auto* server = static_cast<py_server*>(PyCapsule_GetPointer(capsule, server_capsule));
  if (!server) return nullptr;
  server->run_ready();
  Py_RETURN_NONE;
}

}  // namespace

PYBIND11_MODULE(_core, m) {
  m.doc() = "baseplate-serve's native core (private: use the baseplate_serve package)";
  auto plugin_error_type = py::register_exception<plugin_error>(m, "PluginError", PyExc_RuntimeError);
  // Registered after its base, so that it is the one a plugin_lookup_error becomes.
  py::register_exception<plugin_lookup_error>(m, "PluginLookupError", plugin_error_type.ptr());
  m.attr("SDK_VERSION") = BASEPLATE_SDK_VERSION;
  // The server options table (cpp/core/options.hpp); _options.py parses by it.
  m.attr("SERVER_OPTIONS") = option_table();
  python::register_wsgi_types(m);
  m.def(
      "arm_exit_deadline",
      [](double seconds, std::string line) {
        exit_deadline::arm(std::chrono::milliseconds(static_cast<std::int64_t>(seconds * 1000)), std::move(line));
      },
      py::arg("seconds"), py::arg("line"),
      "At `seconds` from now, writes `line` to stderr and exits with status 1, whatever Python is doing.");
  m.def("disarm_exit_deadline", &exit_deadline::disarm, "Cancels arm_exit_deadline.");
  py::class_<py_server>(m, "Server")
      .def(py::init<const py::dict&, const std::string&, const std::string&>(), py::arg("options"),
           py::arg("protocol"), py::arg("dispatch"))
      .def("set_wsgi_app", &py_server::set_wsgi_app, py::arg("app"), py::arg("file_wrapper"), py::arg("server_name"),
           py::arg("server_port"))
      .def("set_thrift_processor", &py_server::set_thrift_processor, py::arg("processor"))
      .def("set_native_app", &py_server::set_native_app, py::arg("path"), py::arg("factory"), py::arg("app_config"))
      .def("adopt_listener", &py_server::adopt_listener, py::arg("fd"))
      .def("set_log_level", &py_server::set_log_level, py::arg("level"))
      .def("start", &py_server::start)
      .def("run_worker", &py_server::run_worker)
      .def("events", &py_server::events, py::arg("timeout_ms"))
      .def("stop", &py_server::stop)
      .def("begin_stop", &py_server::begin_stop)
      .def("force_close", &py_server::force_close)
      .def("drain", &py_server::drain, py::arg("start"))
      .def("ready_runner", &py_server::ready_runner)
      .def("close_queue", &py_server::close_queue)
      .def("join", &py_server::join)
      .def("stats", &py_server::stats)
      .def_property_readonly("event_fd", &py_server::event_fd)
      .def_property_readonly("queue_fd", &py_server::queue_fd);
#ifdef BPS_VERSION_STRING
  m.attr("__version__") = BPS_VERSION_STRING;
#endif
}
