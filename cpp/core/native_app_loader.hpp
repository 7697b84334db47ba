#pragma once
/// Loads a native app: a shared library built against the SDK
/// (cpp/include/baseplate/plugin.hpp), checked for its SDK version, whose
/// factory is called with the app's options.
#include <baseplate/plugin.hpp>

#include <boost/property_tree/ptree.hpp>

#include <stdexcept>
#include <string>

namespace baseplate {

/// A native app that cannot be loaded or whose factory failed; the message
/// names the library and the factory.
class native_app_error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// The library is not a native app of this SDK, or has no such factory: the
/// config names something that is not there (like a Python factory module
/// or attribute that does not exist), not app code that failed.
class native_app_lookup_error : public native_app_error {
 public:
  using native_app_error::native_app_error;
};

/// The services native apps get (logging into the host's stream, trace ids,
/// Thrift headers).
const plugin::host_api& plugin_host();

class loaded_native_app {
 public:
  /// dlopen()s `path`, checks its SDK version and calls `factory`.
  loaded_native_app(const std::string& path, const std::string& factory, const boost::property_tree::ptree& config);
  loaded_native_app(const loaded_native_app&) = delete;
  loaded_native_app& operator=(const loaded_native_app&) = delete;
  /// The library stays mapped: code of it can still run from late
  /// callbacks and its static destructors at exit, so it is never unloaded.
  ~loaded_native_app() = default;

  /// The app's HTTP handler is wrapped: exceptions stop at the boundary.
  const plugin::app& app() const { return app_; }
  /// "path:factory", for log lines.
  const std::string& name() const { return name_; }

 private:
  std::string name_;
  void* handle_ = nullptr;  ///< from dlopen; deliberately never dlclose()d
  boost::property_tree::ptree config_;
  plugin::app app_;
};

}  // namespace baseplate
