#pragma once
/// Serves Thrift calls with a native TProcessor, on the I/O thread (no
/// Python, no lock): the request's own protocol in, the reply out.
#include "call.hpp"

#include <memory>

namespace apache::thrift {
class TProcessor;
}

namespace baseplate::thrift {

class processor_handler final : public handler {
 public:
  explicit processor_handler(std::shared_ptr<apache::thrift::TProcessor> processor);
  void handle(std::shared_ptr<call> c) override;

 private:
  std::shared_ptr<apache::thrift::TProcessor> processor_;
};

}  // namespace baseplate::thrift
