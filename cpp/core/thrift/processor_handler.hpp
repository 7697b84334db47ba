#pragma once
/// Serves Thrift calls with a native TProcessor, on the I/O thread (no
/// Python, no lock): the request's own protocol in, the reply out.
#include "call.hpp"

#include <memory>
#include <string>

namespace apache::thrift {
class TProcessor;
}

namespace baseplate::thrift {

class processor_handler final : public handler {
 public:
  /// `name` names the app in log lines ("libecho.so:make_app").
  explicit processor_handler(std::shared_ptr<apache::thrift::TProcessor> processor,
                             std::string name = "native Thrift app");
  void handle(std::shared_ptr<call> c) override;

 private:
  /// Answers a call the app failed with an exception of its own.
  void fail_call(call& c, const std::string& what);

  std::shared_ptr<apache::thrift::TProcessor> processor_;
  std::string name_;
};

}  // namespace baseplate::thrift
