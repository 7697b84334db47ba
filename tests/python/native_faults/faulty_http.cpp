// An HTTP app that fails in every way a native app can, chosen by path.
#include <baseplate/plugin.hpp>

#include <memory>
#include <stdexcept>
#include <string>

namespace {
using baseplate::http::exchange;
using baseplate::http::response_head;
using baseplate::http::response_part;

/// Kept unanswered until the process exits (/hold).
std::shared_ptr<exchange> held;

class faulty final : public baseplate::http::handler {
 public:
  void handle(std::shared_ptr<exchange> ex) override {
    const auto& t = ex->req().target;
    if (t == "/throw42") throw 42;
    if (t == "/throw-std") throw std::runtime_error("a handler failed");
    if (t == "/drop") return;  // the exchange is dropped unanswered
    if (t == "/hold") {
      held = ex;
      return;
    }
    response_part part;
    if (t == "/body-first") {
      part.body = "no head";
      part.last = true;
      return ex->write(std::move(part), nullptr);
    }
    if (t == "/head-then-throw") {
      part.head = response_head{200, {}, {{"Content-Length", "100"}}};
      part.body = "partial";
      ex->write(std::move(part), nullptr);
      throw 7;
    }
    part.head = response_head{200, {}, {{"Content-Type", "text/plain"}}};
    part.body = "ok";
    part.last = true;
    ex->write(std::move(part), nullptr);
  }
};
}  // namespace

BASEPLATE_APP_FACTORY(make_app) { out.http = std::make_shared<faulty>(); }
