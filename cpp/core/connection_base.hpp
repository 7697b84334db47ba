#pragma once
/// What the server knows of a connection, whatever its protocol.
#include <chrono>
#include <memory>

namespace baseplate {

using clock = std::chrono::steady_clock;

class connection_base : public std::enable_shared_from_this<connection_base> {
 public:
  connection_base() = default;
  connection_base(const connection_base&) = delete;
  connection_base& operator=(const connection_base&) = delete;
  virtual ~connection_base() = default;

  /// Begins serving; called once on the connection's I/O thread.
  virtual void start() = 0;
  /// Graceful stop: close now if idle, else after the current request.
  virtual void shutdown() = 0;
  /// Closes at once; pending app operations complete with an error.
  virtual void close() = 0;
  /// Called about once a second: closes the connection if its current
  /// phase (idle, reading a header, a body read, a write) is over time.
  virtual void check_deadline(clock::time_point now) = 0;
};

}  // namespace baseplate
