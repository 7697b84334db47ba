// The echo service, failing with exceptions that are not std::exception:
// echo("throw42") and remember("throw42") (oneway) throw 42.
#include <baseplate/plugin.hpp>

#include "Echo.h"

#include <map>
#include <memory>
#include <string>

namespace {
class faulty final : public echo::EchoIf {
 public:
  void echo(std::string& out, const std::string& message) override {
    if (message == "throw42") throw 42;
    out = message;
  }
  void fail_declared(const std::string&) override {}
  void fail_undeclared(const std::string&) override { throw 42; }
  void remember(const std::string& message) override {
    if (message == "throw42") throw 42;
    remembered_ = message;
  }
  void recall(std::string& out) override { out = remembered_; }
  void request_headers(std::map<std::string, std::string>&) override {}

 private:
  std::string remembered_;
};
}  // namespace

BASEPLATE_APP_FACTORY(make_processor) {
  out.thrift = std::make_shared<echo::EchoProcessor>(std::make_shared<faulty>());
}
