#include "native_app_loader.hpp"

#include "log.hpp"
#include "thrift/native_app_headers.hpp"

#include <dlfcn.h>
#include <unistd.h>

namespace baseplate {
namespace {

void host_log(int level, const char* logger, const char* message) {
  log::write(static_cast<log::level>(level), logger ? logger : "native", message ? message : "");
}
bool host_log_enabled(int level) { return log::enabled(static_cast<log::level>(level)); }
const char* host_trace_id() { return log::current_trace_id().c_str(); }

const plugin::host_api host{host_log, host_log_enabled, host_trace_id, thrift::native_app_request_header,
                            thrift::native_app_set_reply_header};

/// The boundary between the server and a native HTTP app: whatever the app
/// throws (a std::exception or anything else) is logged with the app's
/// name, and the request is answered 500 (or its connection closed when the
/// response had begun); the I/O thread keeps serving.
class guarded_handler final : public http::handler {
 public:
  guarded_handler(std::shared_ptr<http::handler> app, std::string name) : app_(std::move(app)), name_(std::move(name)) {}

  void handle(std::shared_ptr<http::exchange> ex) override {
    try {
      app_->handle(ex);
    } catch (const std::exception& e) {
      fail(*ex, e.what());
    } catch (...) {
      fail(*ex, "a non-standard exception");
    }
  }

 private:
  void fail(http::exchange& ex, const std::string& what) {
    log::write(log::level::error, "baseplate_serve.http", name_ + " failed: " + what);
    ex.abort();
  }

  std::shared_ptr<http::handler> app_;
  std::string name_;
};

std::string dl_error() {
  const char* e = ::dlerror();
  return e ? e : "unknown error";
}

}  // namespace

const plugin::host_api& plugin_host() { return host; }

loaded_native_app::loaded_native_app(const std::string& path, const std::string& factory,
                             const boost::property_tree::ptree& config)
    : name_(path + ":" + factory), config_(config) {
  handle_ = ::dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!handle_) {
    const std::string message = "cannot load native app " + path + ": " + dl_error();
    // A library that is not there is a wrong name in the config (exit 2);
    // one that is there but does not load is a broken build (exit 1).
    if (path.find('/') != std::string::npos && ::access(path.c_str(), F_OK) != 0) throw native_app_lookup_error(message);
    throw native_app_error(message);
  }
  auto* version = static_cast<const int*>(::dlsym(handle_, "baseplate_plugin_sdk_version"));
  if (!version)
    throw native_app_lookup_error(path + " is not a baseplate-serve native app: it has no baseplate_plugin_sdk_version "
                              "(build it against <baseplate/plugin.hpp>)");
  if (*version != BASEPLATE_SDK_VERSION)
    throw native_app_lookup_error(path + " was built against SDK version " + std::to_string(*version) +
                       "; this server has SDK version " + std::to_string(BASEPLATE_SDK_VERSION) +
                       ": rebuild it against this server's SDK (baseplate-serve --sdk-dir)");
  using factory_fn = void (*)(const plugin::context&, plugin::app&);
  auto fn = reinterpret_cast<factory_fn>(::dlsym(handle_, factory.c_str()));
  if (!fn) throw native_app_lookup_error(path + " has no factory " + factory + " (declare it with BASEPLATE_APP_FACTORY)");
  plugin::context ctx{&config_, &host};
  try {
    fn(ctx, app_);
  } catch (const std::exception& e) {
    throw native_app_error(path + ":" + factory + " failed: " + e.what());
  } catch (...) {
    throw native_app_error(path + ":" + factory + " failed with a non-standard exception");
  }
  if (!app_.http && !app_.thrift)
    throw native_app_error(path + ":" + factory + " returned neither an HTTP handler nor a Thrift processor");
  if (app_.http) app_.http = std::make_shared<guarded_handler>(std::move(app_.http), name_);
}

}  // namespace baseplate
