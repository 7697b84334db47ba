#pragma once
/// Native apps: a shared library that `[app:NAME] factory = libmyapp.so:make_app`
/// names, built against this SDK (find_package(BaseplateServe)).
///
///     #include <baseplate/plugin.hpp>
///
///     BASEPLATE_APP_FACTORY(make_app) {
///       auto greeting = ctx.config->get<std::string>("greeting", "hello");
///       out.http = std::make_shared<my_handler>(greeting);
///     }
///
/// The factory receives the app section's options (the same dict Python
/// apps get, as a ptree: `get<int>("noodles.count")`) and returns an HTTP
/// handler (for baseplate.server.wsgi) or a Thrift TProcessor (for
/// baseplate.server.thrift). Requests reach it on the server's I/O threads
/// without any Python lock; a handler must not block them (complete the
/// exchange later from another thread if it has to wait).
///
/// The project calls these "native apps". This header's name, the namespace
/// `baseplate::plugin` and the exported `baseplate_plugin_sdk_version` keep an
/// older word on purpose: native apps built against the SDK include, use and
/// export them, and renaming them would break their sources and their load.
#include <baseplate/http/exchange.hpp>

#include <boost/property_tree/ptree.hpp>

#include <memory>
#include <string>

namespace apache::thrift {
class TProcessor;
}

/// The SDK's ABI version. A native app built against another version is
/// refused at load with a message naming both.
#ifndef BASEPLATE_SDK_VERSION
#define BASEPLATE_SDK_VERSION 2
#endif

namespace baseplate::plugin {

/// Services of the server, as plain function pointers (the server keeps
/// its own symbols private).
struct host_api {
  /// Writes a record into the server's one log stream (Python's logging);
  /// level as Python's (10 DEBUG ... 50 CRITICAL).
  void (*log)(int level, const char* logger, const char* message);
  /// True when a record of this level would be written.
  bool (*log_enabled)(int level);
  /// The trace id of the request being handled on this thread, "-" if none.
  const char* (*trace_id)();
  /// Thrift: an info header of the request being processed, or nullptr.
  const char* (*thrift_header)(const char* key);
  /// Thrift: sets an info header on the reply being written.
  void (*set_thrift_header)(const char* key, const char* value);
};

/// What the app factory receives.
struct context {
  /// The [app:NAME] options (factory included). Dotted keys are paths:
  /// `noodles.count = 3` is `config->get<int>("noodles.count")`.
  const boost::property_tree::ptree* config;
  /// The server's services; valid for the life of the process.
  const host_api* host;
};

/// What the app factory returns: set one of the two.
struct app {
  /// Served by baseplate.server.wsgi.
  std::shared_ptr<http::handler> http;
  /// Served by baseplate.server.thrift (called with the request's own
  /// protocol, binary or compact, on an I/O thread).
  std::shared_ptr<apache::thrift::TProcessor> thrift;
};

/// Levels for host_api::log.
enum level : int { debug = 10, info = 20, warning = 30, error = 40, critical = 50 };

}  // namespace baseplate::plugin

/// The version this native app was built against; the server reads it before
/// calling any factory. Weak: every file that includes this header defines
/// it, and the linker keeps one.
extern "C" __attribute__((weak, visibility("default"))) const int baseplate_plugin_sdk_version = BASEPLATE_SDK_VERSION;

/// Declares an app factory named `name` (the part after ':' in `factory`).
/// In its body: `ctx` (const context&) and `out` (app&). Exceptions it
/// throws stop the server with their message.
#define BASEPLATE_APP_FACTORY(name)                                                                      \
  extern "C" __attribute__((visibility("default"))) void name(const ::baseplate::plugin::context& ctx, \
                                                              ::baseplate::plugin::app& out)
