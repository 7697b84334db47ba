#pragma once
/// Native log records. The core never writes to a stream itself: it hands
/// records to one sink, which the host installs (the Python bridge queues
/// them for Python's logging; the C++ tests collect them).
#include <functional>
#include <string>
#include <string_view>

namespace baseplate::log {

/// Python's logging levels, so a record keeps its level across the bridge.
enum class level : int { debug = 10, info = 20, warning = 30, error = 40, critical = 50 };

/// Receives every record; must not block and must be thread-safe.
using sink = std::function<void(level, std::string_view logger, std::string message)>;

/// Installs the process-wide sink (nullptr: records go to stderr).
void set_sink(sink s);

/// Records below this level are dropped before any formatting cost.
void set_threshold(level l);
bool enabled(level l);

/// Sends one record to the sink.
void write(level l, std::string_view logger, std::string message);

}  // namespace baseplate::log
