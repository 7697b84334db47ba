/// The _core extension: the only place that includes pybind11 besides the
/// adapters in this folder. It builds a core server for an app (Python,
/// through a dispatcher, or native), and hands signals and native log
/// records to the Python main thread.
#include "dispatch.hpp"
#include "exit_deadline.hpp"
#include "http/connection.hpp"
#include "native_app_loader.hpp"
#include "server.hpp"
#include "thrift/processor_handler.hpp"
#include "thrift.hpp"
#include "thrift/connection.hpp"
#include "wsgi.hpp"

#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <functional>
#include <memory>
#include <optional>

namespace py = pybind11;
using namespace baseplate;
using python::python_job;

namespace {

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

/// Native log records go to the host's logging (through the server's
/// event queue) while this lives; a native app's factory logs through it too.
class log_sink {
 public:
  explicit log_sink(server& s) {
    log::set_sink([&s](log::record r) { s.post_log(std::move(r)); });
  }
  ~log_sink() { log::set_sink(nullptr); }
  log_sink(const log_sink&) = delete;
  log_sink& operator=(const log_sink&) = delete;
};

/// The app the connections serve: a Python WSGI callable or TProcessor
/// (through a dispatcher), or a native app (straight from the I/O threads).
class app_binding {
 public:
  app_binding() : http_handler_(*this), thrift_handler_(*this) {}

  void set_wsgi_app(python::dispatcher& d, python::wsgi_settings s) {
    dispatch_ = &d;
    s.dispatch = &d;
    wsgi_.emplace(std::move(s));
  }

  void set_thrift_processor(python::dispatcher& d, py::object processor) {
    dispatch_ = &d;
    thrift_.emplace(std::move(processor));
  }

  /// Returns "http" or "thrift", what the native app provides.
  std::string set_native_app(const std::string& path, const std::string& factory, const py::dict& app_config) {
    boost::property_tree::ptree config;
    for (auto item : app_config) config.put(item.first.cast<std::string>(), item.second.cast<std::string>());
    native_app_ = std::make_unique<loaded_native_app>(path, factory, config);
    if (native_app_->app().http) {
      http_target_ = native_app_->app().http.get();
      return "http";
    }
    native_thrift_ = std::make_unique<thrift::processor_handler>(native_app_->app().thrift, native_app_->name());
    thrift_target_ = native_thrift_.get();
    return "thrift";
  }

  bool has_app() const { return wsgi_ || thrift_ || native_app_; }

  /// Runs one Python job (GIL held), for the dispatcher.
  void run(python_job& job) {
    if (job.http)
      wsgi_->run(std::move(job.http));
    else if (job.thrift)
      thrift_->run(std::move(job.thrift));
  }

  connection_factory factory(const std::string& protocol, std::function<const server_options&()> opts) {
    if (protocol == "wsgi")
      return [this, opts](stream_socket s, io_thread& t) -> std::shared_ptr<connection_base> {
        return std::make_shared<http::connection>(std::move(s), t, *http_target_, opts());
      };
    if (protocol == "thrift")
      return [this, opts](stream_socket s, io_thread& t) -> std::shared_ptr<connection_base> {
        return std::make_shared<thrift::connection>(std::move(s), t, *thrift_target_, opts());
      };
    throw std::invalid_argument("unknown protocol " + protocol);
  }

 private:
  /// The core's view of a Python WSGI app: queue the exchange, never block.
  class queued_http_handler final : public http::handler {
   public:
    explicit queued_http_handler(app_binding& b) : b_(b) {}
    void handle(std::shared_ptr<http::exchange> ex) override {
      if (b_.dispatch_ && b_.dispatch_->submit(python_job{ex, nullptr, nullptr})) return;
      http::response_part part;
      part.head = http::response_head{503, {}, {{"Content-Type", "text/plain"}}};
      part.body = "Service Unavailable\n";
      part.last = true;
      ex->write(std::move(part), nullptr);
    }

   private:
    app_binding& b_;
  };

  /// The core's view of a Python TProcessor: queue the call, never block.
  class queued_thrift_handler final : public thrift::handler {
   public:
    explicit queued_thrift_handler(app_binding& b) : b_(b) {}
    void handle(std::shared_ptr<thrift::call> c) override {
      if (!b_.dispatch_ || !b_.dispatch_->submit(python_job{nullptr, c, nullptr})) c->fail();
    }

   private:
    app_binding& b_;
  };

  python::dispatcher* dispatch_ = nullptr;  ///< set with the Python app
  queued_http_handler http_handler_;
  queued_thrift_handler thrift_handler_;
  std::unique_ptr<loaded_native_app> native_app_;
  std::unique_ptr<thrift::processor_handler> native_thrift_;
  http::handler* http_target_ = &http_handler_;        ///< the Python app's queue, or a native app
  thrift::handler* thrift_target_ = &thrift_handler_;  ///< likewise
  std::optional<python::wsgi_runner> wsgi_;
  std::optional<python::thrift_runner> thrift_;
};

/// A core server serving one app: the app binding, the dispatcher of its
/// Python requests ("threads" or "gevent"; none for a native app), the
/// server's lifecycle and events, and the log sink. What Python sees as
/// _core.Server.
class py_server {
 public:
  py_server(const py::dict& options, const std::string& protocol, const std::string& dispatch)
      : dispatch_name_(dispatch),
        server_(parse_options(options), app_.factory(protocol, [this]() -> const server_options& {
                  return server_.options();
                })),
        sink_(server_) {
    if (dispatch != "gevent" && dispatch != "threads") throw std::invalid_argument("unknown dispatch " + dispatch);
    // The host maps io_threads = 0 to 1 for threads dispatch (see _native.py).
    if (server_.is_inline() && dispatch != "gevent")
      throw std::invalid_argument("io_threads = 0 needs gevent dispatch");
  }

  ~py_server() {
    // Jobs hold references into the app: the dispatcher's queue goes before it.
    if (dispatcher_) dispatcher_->close();
  }

  // -- the app

  void set_wsgi_app(py::object app, py::object file_wrapper, std::string server_name, std::string server_port) {
    app_.set_wsgi_app(make_dispatcher(), python::wsgi_settings{std::move(app), std::move(file_wrapper),
                                                               std::move(server_name), std::move(server_port)});
  }
  void set_thrift_processor(py::object processor) { app_.set_thrift_processor(make_dispatcher(), std::move(processor)); }
  std::string set_native_app(const std::string& path, const std::string& factory, const py::dict& app_config) {
    // A native app has no Python thread to run its loop: the host maps
    // io_threads = 0 to 1 for it (see _native.py).
    if (server_.is_inline()) throw std::logic_error("a native app needs io_threads >= 1");
    return app_.set_native_app(path, factory, app_config);
  }
  /// None for a native app.
  python::dispatcher* dispatcher() { return dispatcher_.get(); }

  // -- lifecycle

  void adopt_listener(int fd) { server_.adopt_listener(fd); }

  void start() {
    if (!app_.has_app()) throw std::logic_error("no app set");
    // gevent: SIGUSR1 and the stop signals also go to a thread of the
    // host's own (wait_signal): the hub may be stuck in a request.
    if (dispatch_name_ == "gevent" && dispatcher_) server_.route_signals_to_waiter();
    server_.start();
  }

  void arm_deadline_on_stop(double seconds, std::string line) {
    server_.arm_deadline_on_stop(std::chrono::milliseconds(static_cast<std::int64_t>(seconds * 1000)), std::move(line));
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

  int wait_signal(int timeout_ms) {
    py::gil_scoped_release nogil;
    return server_.wait_signal(timeout_ms);
  }

  void begin_stop() { server_.begin_stop(); }

  std::size_t force_close(int wait_ms) {
    py::gil_scoped_release nogil;
    return server_.force_close(std::chrono::milliseconds(wait_ms));
  }

  void close_dispatch() {
    if (dispatcher_) dispatcher_->close();
  }

  void join() {
    py::gil_scoped_release nogil;
    server_.join();
  }

  py::dict stats() {
    auto s = server_.stats();
    py::dict d;
    d["open_connections"] = s.open_connections;
    d["accepted"] = s.accepted;
    d["queued"] = dispatcher_ ? dispatcher_->queued() : 0;
    d["running"] = server_.live()->in_app.load();
    return d;
  }

  int event_fd() const { return server_.event_fd(); }

 private:
  python::dispatcher& make_dispatcher() {
    if (dispatcher_) throw std::logic_error("app already set");
    auto run = [this](python_job& job) { app_.run(job); };
    if (server_.is_inline())
      dispatcher_ = std::make_unique<python::inline_dispatcher>(run, server_.live(), server_.inline_loop());
    else if (dispatch_name_ == "gevent")
      dispatcher_ = std::make_unique<python::gevent_dispatcher>(run, server_.live());
    else
      dispatcher_ = std::make_unique<python::threads_dispatcher>(run, server_.live());
    return *dispatcher_;
  }

  std::string dispatch_name_;
  app_binding app_;                                  ///< before server_: connections point into it
  std::unique_ptr<python::dispatcher> dispatcher_;   ///< outlives no connection: server_ joins first
  server server_;
  log_sink sink_;
};

}  // namespace

PYBIND11_MODULE(_core, m) {
  m.doc() = "baseplate-serve's native core (private: use the baseplate_serve package)";
  auto native_app_error_type = py::register_exception<native_app_error>(m, "NativeAppError", PyExc_RuntimeError);
  // Registered after its base, so that it is the one a native_app_lookup_error becomes.
  py::register_exception<native_app_lookup_error>(m, "NativeAppLookupError", native_app_error_type.ptr());
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
  m.def("exit_deadline_armed", &exit_deadline::armed, "Whether a stop's exit deadline is armed.");
  py::class_<python::dispatcher>(m, "Dispatcher", "How the server's Python requests run (see dispatch.hpp).")
      .def_property_readonly("name", &python::dispatcher::name)
      .def("close", &python::dispatcher::close);
  py::class_<python::threads_dispatcher, python::dispatcher>(m, "ThreadsDispatcher")
      .def("run_worker", &python::threads_dispatcher::run_worker, "The body of a Python worker thread.");
  py::class_<python::hub_dispatcher, python::dispatcher>(m, "HubDispatcher")
      .def("ready_runner",
           [](python::hub_dispatcher& d) { return py::reinterpret_steal<py::object>(d.ready_runner()); });
  py::class_<python::inline_dispatcher, python::hub_dispatcher>(m, "InlineDispatcher")
      .def_property_readonly("reactor_fd", &python::inline_dispatcher::reactor_fd)
      .def("io_runner",
           [](python::inline_dispatcher& d) { return py::reinterpret_steal<py::object>(d.io_runner()); },
           "run_io(start), for the hub's watcher on reactor_fd.");
  py::class_<python::gevent_dispatcher, python::hub_dispatcher>(m, "GeventDispatcher")
      .def_property_readonly("queue_fd", &python::gevent_dispatcher::queue_fd)
      .def(
          "drain", [](python::gevent_dispatcher& d, py::object start) { d.drain(start.ptr()); }, py::arg("start"));
  py::class_<py_server>(m, "Server")
      .def(py::init<const py::dict&, const std::string&, const std::string&>(), py::arg("options"),
           py::arg("protocol"), py::arg("dispatch"))
      .def("set_wsgi_app", &py_server::set_wsgi_app, py::arg("app"), py::arg("file_wrapper"), py::arg("server_name"),
           py::arg("server_port"))
      .def("set_thrift_processor", &py_server::set_thrift_processor, py::arg("processor"))
      .def("set_native_app", &py_server::set_native_app, py::arg("path"), py::arg("factory"), py::arg("app_config"))
      .def_property_readonly("dispatcher", &py_server::dispatcher, py::return_value_policy::reference_internal)
      .def("adopt_listener", &py_server::adopt_listener, py::arg("fd"))
      .def("set_log_level", [](py_server&, int level) { log::set_threshold(static_cast<log::level>(level)); },
           py::arg("level"))
      .def("arm_deadline_on_stop", &py_server::arm_deadline_on_stop, py::arg("seconds"), py::arg("line"),
           "Arms the exit deadline natively when the first stop signal arrives.")
      .def("start", &py_server::start)
      .def("events", &py_server::events, py::arg("timeout_ms"))
      .def("wait_signal", &py_server::wait_signal, py::arg("timeout_ms"),
           "gevent dispatch: the next SIGUSR1 or stop signal, for a thread that does not need the hub;"
           " 0 on timeout, -1 once stopped.")
      .def("begin_stop", &py_server::begin_stop)
      .def("force_close", &py_server::force_close, py::arg("wait_ms") = 500)
      .def("close_dispatch", &py_server::close_dispatch)
      .def("join", &py_server::join)
      .def("stats", &py_server::stats)
      .def_property_readonly("event_fd", &py_server::event_fd);
#ifdef BPS_VERSION_STRING
  m.attr("__version__") = BPS_VERSION_STRING;
#endif
}
