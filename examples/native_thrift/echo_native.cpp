// The echo service of examples/thrift_echo, as a native TProcessor: served
// by baseplate.server.thrift over every transport, with no Python.
#include <baseplate/log.hpp>
#include <baseplate/plugin.hpp>

#include "Echo.h"

#include <map>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>

namespace {

class echo_handler final : public echo::EchoIf {
 public:
  echo_handler(const baseplate::plugin::host_api* host) : host_(host), log_(host, "echo_native") {}

  void echo(std::string& out, const std::string& message) override {
    if (const char* trace = host_->thrift_header("Trace")) host_->set_thrift_header("Echo-Trace", trace);
    out = message;
  }
  void fail_declared(const std::string& message) override {
    echo::EchoError e;
    e.message = message;
    throw e;
  }
  void fail_undeclared(const std::string& message) override { throw std::runtime_error(message); }
  void remember(const std::string& message) override {
    std::lock_guard<std::mutex> lk(m_);  // several I/O threads may call at once
    remembered_ = message;
  }
  void recall(std::string& out) override {
    std::lock_guard<std::mutex> lk(m_);
    out = remembered_;
  }
  void request_headers(std::map<std::string, std::string>& out) override {
    for (const char* key : {"Trace", "Span", "Parent", "User-Agent"})
      if (const char* v = host_->thrift_header(key)) out[key] = v;
    log_.info("request_headers called");
  }

 private:
  const baseplate::plugin::host_api* host_;
  baseplate::logger log_;
  std::mutex m_;
  std::string remembered_;
};

}  // namespace

BASEPLATE_APP_FACTORY(make_processor) {
  out.thrift = std::make_shared<echo::EchoProcessor>(std::make_shared<echo_handler>(ctx.host));
}
