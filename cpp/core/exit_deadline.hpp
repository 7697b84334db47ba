#pragma once
/// The last line of defence of a graceful stop: once armed, a native thread
/// ends the process at the deadline, whatever the app or Python is doing
/// (a request spinning on the CPU with the GIL held, a hung worker, a
/// custom server that never returns). Every way of serving arms it when a
/// stop begins, so no stop outlives drain_time + stop_timeout + 1 s.
#include <chrono>
#include <functional>
#include <string>

namespace baseplate::exit_deadline {

/// At `after` from now, writes `line` to stderr (the host formats it like
/// its other log lines; "{detail}" in it is replaced by what `detail()`
/// returns then, e.g. what is still in flight) and exits with status 1.
/// Arming again moves the deadline. Never blocks; thread-safe.
void arm(std::chrono::milliseconds after, std::string line, std::function<std::string()> detail = {});

/// Cancels the deadline (the stop finished in time).
void disarm();

/// Whether a deadline is armed (for tests and diagnostics).
bool armed();

}  // namespace baseplate::exit_deadline
