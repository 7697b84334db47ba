// A native HTTP app: answers without Python, reads its options from the
// same [app:main] section Python apps get, and logs into the server's log.
#include <baseplate/log.hpp>
#include <baseplate/plugin.hpp>

#include <memory>
#include <stdexcept>
#include <string>

namespace {

using baseplate::http::exchange;
using baseplate::http::response_head;
using baseplate::http::response_part;

class hello_handler final : public baseplate::http::handler {
 public:
  hello_handler(std::string greeting, baseplate::logger log, bool log_each_request)
      : greeting_(std::move(greeting)), log_(std::move(log)), log_each_request_(log_each_request) {}

  void handle(std::shared_ptr<exchange> ex) override {
    const auto& req = ex->req();
    if (req.target == "/echo") return echo(ex, std::make_shared<std::string>());
    if (req.target == "/log" || log_each_request_) log_.info("native app handled " + req.target);
    respond(*ex, 200, greeting_ + ", from C++!\n");
  }

 private:
  static void respond(exchange& ex, unsigned status, std::string body) {
    response_part part;
    part.head = response_head{status, {}, {{"Content-Type", "text/plain"}}};
    part.body = std::move(body);
    part.last = true;
    ex.write(std::move(part), nullptr);
  }

  /// Reads the whole body asynchronously (never blocking the I/O thread),
  /// then sends it back.
  void echo(std::shared_ptr<exchange> ex, std::shared_ptr<std::string> body) {
    ex->read_body(0, [this, ex, body](boost::system::error_code ec, std::string_view data) {
      if (ec) return ex->abort();
      if (!data.empty()) {
        body->append(data);
        return echo(ex, body);
      }
      respond(*ex, 200, *body);
    });
  }

  std::string greeting_;
  baseplate::logger log_;
  bool log_each_request_;  // one INFO line per request (bench/ native-log)
};

}  // namespace

BASEPLATE_APP_FACTORY(make_app) {
  baseplate::logger log(ctx.host, "hello_native");
  auto greeting = ctx.config->get<std::string>("greeting", "Hello");
  if (ctx.config->get<bool>("fail_on_start", false)) throw std::runtime_error("asked to fail by fail_on_start");
  // log_each_request = true: one INFO line for every request, not just /log
  const bool log_each_request = ctx.config->get<bool>("log_each_request", false);
  log.info("hello_native ready, greeting " + greeting);
  out.http = std::make_shared<hello_handler>(greeting, log, log_each_request);
}
