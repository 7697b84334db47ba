#pragma once
/// Loads a native app: a shared library built against the SDK
/// (cpp/include/baseplate/plugin.hpp), checked for its SDK version, whose
/// factory is called with the app's options.
#include <baseplate/plugin.hpp>

#include <boost/property_tree/ptree.hpp>

#include <stdexcept>
#include <string>

namespace baseplate {

/// A plugin that cannot be loaded or whose factory failed; the message
/// names the library and the factory.
class plugin_error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// The library is not a native app of this SDK, or has no such factory: the
/// config names something that is not there (like a Python factory module
/// or attribute that does not exist), not app code that failed.
class plugin_lookup_error : public plugin_error {
 public:
  using plugin_error::plugin_error;
};

/// The services plugins get (logging into the host's stream, trace ids,
/// Thrift headers).
const plugin::host_api& plugin_host();

class loaded_plugin {
 public:
  /// dlopen()s `path`, checks its SDK version and calls `factory`.
  loaded_plugin(const std::string& path, const std::string& factory, const boost::property_tree::ptree& config);
  loaded_plugin(const loaded_plugin&) = delete;
  loaded_plugin& operator=(const loaded_plugin&) = delete;
  /// The library stays mapped: code of it can still run from late
  /// callbacks and its static destructors at exit, so it is never unloaded.
  ~loaded_plugin() = default;

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
