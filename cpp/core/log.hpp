#pragma once
/// Native logging, on Boost.Log. Records carry a level (Python's numbers),
/// a logger name (the Boost.Log "Channel"), and the trace id of the request
/// being handled on this thread. The core writes no stream itself: one sink
/// hands every record to the host (the Python bridge queues them for
/// Python's logging, so both land in one stream; the C++ tests collect them).
#include <functional>
#include <string>
#include <string_view>

namespace baseplate::log {

/// Python's logging levels, so a record keeps its level across the bridge.
enum class level : int { debug = 10, info = 20, warning = 30, error = 40, critical = 50 };

/// One record as the host receives it.
struct record {
  level lvl;
  std::string logger;
  std::string message;
  std::string trace_id;  ///< "-" outside a request
};

/// Receives every record; must not block and must be thread-safe.
using sink = std::function<void(record)>;

/// Installs the process-wide sink (nullptr: records go to stderr).
void set_sink(sink s);

/// Records below this level are dropped before any formatting cost.
void set_threshold(level l);
bool enabled(level l);

/// Writes one record through Boost.Log.
void write(level l, std::string_view logger, std::string message);

/// Sets this thread's current trace id for the lifetime of the object
/// (the core sets it while it handles a request's events).
class scoped_trace {
 public:
  explicit scoped_trace(const std::string& trace_id);
  ~scoped_trace();
  scoped_trace(const scoped_trace&) = delete;
  scoped_trace& operator=(const scoped_trace&) = delete;

 private:
  const std::string* previous_;
};

/// This thread's current trace id ("-" when none).
const std::string& current_trace_id();

}  // namespace baseplate::log
