#pragma once
/// Runs a Python Thrift TProcessor for core Thrift calls, on a Python worker
/// thread with the GIL held.
#include "thrift/call.hpp"

#include <pybind11/pybind11.h>

#include <memory>

namespace baseplate::python {

namespace py = pybind11;

class thrift_runner {
 public:
  explicit thrift_runner(py::object processor);
  /// Serves one call start to finish (GIL held).
  void run(std::shared_ptr<thrift::call> c);

 private:
  py::object processor_;
  py::object process_call_;  ///< baseplate_serve._thrift.process_call
  py::object logger_;
};

}  // namespace baseplate::python
