#pragma once
/// Logging from a native app into the server's one log stream.
///
///     baseplate::logger log(ctx.host, "myapp");
///     log.info("served " + path);
#include <baseplate/plugin.hpp>

#include <string>

namespace baseplate {

/// A named logger (like logging.getLogger(name) in Python). Records carry
/// the trace id of the request being handled on the calling thread.
class logger {
 public:
  logger(const plugin::host_api* host, std::string name) : host_(host), name_(std::move(name)) {}

  /// True when a record of this level would be written (skip costly messages).
  bool enabled(int level) const { return host_->log_enabled(level); }
  /// Writes a record at `level` (10 DEBUG ... 50 CRITICAL).
  void log(int level, const std::string& message) const {
    if (enabled(level)) host_->log(level, name_.c_str(), message.c_str());
  }
  void debug(const std::string& m) const { log(plugin::debug, m); }
  void info(const std::string& m) const { log(plugin::info, m); }
  void warning(const std::string& m) const { log(plugin::warning, m); }
  void error(const std::string& m) const { log(plugin::error, m); }

  /// The trace id of the request being handled on this thread ("-" if none).
  std::string trace_id() const { return host_->trace_id(); }

 private:
  const plugin::host_api* host_;
  std::string name_;
};

}  // namespace baseplate
