#pragma once
/// Runs a Python WSGI app (PEP 3333) for core HTTP exchanges. Called on a
/// Python worker thread with the GIL held; waits for the network only with
/// the GIL released.
#include <baseplate/http/exchange.hpp>

#include <pybind11/pybind11.h>

#include <memory>
#include <string>

namespace baseplate::python {

namespace py = pybind11;

class dispatcher;

struct wsgi_settings {
  py::object app;
  /// The class offered as environ["wsgi.file_wrapper"].
  py::object file_wrapper;
  std::string server_name;
  std::string server_port;
  /// How requests wait for the network (and wsgi.multithread); outlives the runner.
  dispatcher* dispatch = nullptr;
};

class wsgi_runner {
 public:
  explicit wsgi_runner(wsgi_settings s);
  /// Serves one request start to finish (GIL held).
  void run(std::shared_ptr<http::exchange> ex);

 private:
  py::dict make_environ(const http::request& r, py::object input);

  wsgi_settings s_;
  py::dict template_;
  py::object logger_;
};

/// Registers the Python types the runner hands to apps.
void register_wsgi_types(py::module_& m);

}  // namespace baseplate::python
