#pragma once
/// The options of `[server:NAME]`, defined once. BPS_CORE_OPTIONS (read by
/// the core) and BPS_PYTHON_OPTIONS (read by the Python side) are the one
/// table: it generates `server_options`, `set_option()` and
/// `server_option_table`, which the extension exports as
/// `_core.SERVER_OPTIONS`; the Python package builds its parser from that,
/// and a test holds docs/configuration.md to it.
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <string_view>

namespace baseplate {

/// How an option is written in the INI file, and the unit of its value in
/// the table and in set_option().
enum class option_kind {
  count,     ///< a whole number
  bytes,     ///< a whole number of bytes
  timespan,  ///< "30 seconds", "500 milliseconds" or a number of seconds; held in milliseconds
  flag,      ///< true or false; held as 1 or 0
  choice,    ///< one of the words in `choices`
  text,      ///< any text (a `module:Class`)
};

/// Who reads the option: the native core (a member of server_options) or
/// the Python side (never sent to the core).
enum class option_user { core, python };

/// One row of the table.
struct option_info {
  const char* key;  ///< the INI name
  option_kind kind;
  option_user user;
  std::int64_t default_value;  ///< in the kind's unit; unused for choice and text
  std::int64_t min, max;       ///< the range allowed, inclusive, in the kind's unit
  const char* zero;            ///< what 0 means ("unlimited"), or "" when 0 is nothing special
  const char* default_text;    ///< choice and text: the default, in words; else ""
  const char* choices;         ///< choice: the words allowed, space-separated; else ""
  const char* doc;             ///< one line for docs/configuration.md
};

// X(member, C++ type, kind, default, min, max, zero, doc): the options the
// core reads. The member is named as the INI key. Ranges: see
// docs/configuration.md ("Ranges").
#define BPS_CORE_OPTIONS(X)                                                                                          \
  X(max_concurrency, std::size_t, count, 0, 0, 1'000'000, "unlimited",                                               \
    "simultaneous client connections; when reached, new connections wait in the listen backlog until one closes")  \
  X(stop_timeout, std::chrono::milliseconds, timespan, 10'000, 0, 3'600'000, "stop at once",                         \
    "how long a graceful stop lets requests in flight finish, after the drain; a stop with nothing in flight "       \
    "ends at once")                                                                                                  \
  X(io_threads, unsigned, count, 1, 0, 256, "inline I/O",                                                           \
    "native threads doing network I/O and HTTP/Thrift parsing; 0: the gevent hub runs the event loop itself and no " \
    "request crosses a thread (gevent dispatch only: with threads dispatch or a native app 0 is used as 1, logged)") \
  X(header_timeout, std::chrono::milliseconds, timespan, 10'000, 1, 3'600'000, "",                                   \
    "time to receive a whole request header section (also a new connection's wait for its first request)")          \
  X(keepalive_timeout, std::chrono::milliseconds, timespan, 60'000, 1, 3'600'000, "",                                \
    "time a keep-alive connection may sit idle between requests")                                                   \
  X(io_timeout, std::chrono::milliseconds, timespan, 60'000, 1, 3'600'000, "",                                       \
    "time one read of a request body, or one write of a response, may take")                                        \
  X(max_header_size, std::uint32_t, bytes, 64 * 1024, 64, 16 * 1024 * 1024, "",                                      \
    "bytes of request line and headers; more is answered 431")                                                      \
  X(max_request_line, std::size_t, bytes, 8 * 1024, 0, 16 * 1024 * 1024, "only max_header_size applies",             \
    "bytes of the request line (method, target, version, without CRLF); more is answered 414")                      \
  X(max_header_count, std::size_t, count, 100, 0, 100'000, "unlimited",                                              \
    "header fields in one request; more is answered 431")                                                           \
  X(max_pending_requests, std::size_t, count, 1024, 0, 1'000'000, "unlimited",                                       \
    "requests (HTTP) and calls (Thrift) handed to the app and not yet answered, queued for a worker or running, "   \
    "across all connections; more is shed: HTTP 503 with the connection closed, Thrift a TApplicationException "    \
    "(INTERNAL_ERROR) reply on a connection that stays open")                                                       \
  X(max_body_size, std::uint64_t, bytes, 1024ll * 1024 * 1024, 0, 1024ll * 1024 * 1024 * 1024, "unlimited",          \
    "bytes of request body; more is answered 413")                                                                  \
  X(body_preread, std::size_t, bytes, 64 * 1024, 0, 16 * 1024 * 1024, "never read ahead",                            \
    "HTTP: request bodies up to this size are read before the app is called, so the app never waits for the "       \
    "network for small uploads")                                                                                    \
  X(max_frame_size, std::size_t, bytes, 16 * 1024 * 1024, 16, 1024 * 1024 * 1024, "",                                \
    "Thrift: bytes of one message (after inflating a zlib one); more closes the connection")                        \
  X(access_log, bool, flag, 0, 0, 1, "", "one line per request on baseplate_serve.access (see logging.md)")

// X(key, kind, default, min, max, zero, default_text, choices, doc): the
// options only the Python side reads.
#define BPS_PYTHON_OPTIONS(X)                                                                                        \
  X("drain_time", timespan, 5'000, 0, 3'600'000, "no drain", "", "",                                                 \
    "after a stop signal, keep serving this long before stopping (so load balancers notice)")                       \
  X("dispatch", choice, 0, 0, 0, "", "gevent (threads if gevent is not installed)", "gevent threads",                \
    "how Python requests run: gevent (greenlets on the hub of the main thread; the stdlib is monkey-patched "       \
    "before the app is imported, as baseplate.py does) or threads (Python worker threads)")                         \
  X("python_threads", count, 16, 1, 1024, "", "", "",                                                                \
    "threads dispatch: Python worker threads running the app; bounds how many requests can block in the app at "    \
    "once")                                                                                                         \
  X("monitoring.blocked_hub", timespan, 1'000, 0, 3'600'000, "off", "", "",                                            \
    "gevent dispatch: a WARNING with the blocking greenlet's stack when the hub has not run for this long")         \
  X("handler", text, 0, 0, 0, "", "none", "",                                                                        \
    "WSGI only: a gevent.pywsgi.WSGIHandler subclass (module:Class); the app is then served by gevent's pywsgi, "   \
    "not the native core (a WARNING says so)")

/// The core's options, members generated from BPS_CORE_OPTIONS with their
/// defaults. Values only: no runtime state (counters live in the server).
struct server_options {
#define BPS_OPTION_MEMBER(member, type, kind, dflt, lo, hi, zero, doc) type member = type(dflt);
  BPS_CORE_OPTIONS(BPS_OPTION_MEMBER)
#undef BPS_OPTION_MEMBER
};

/// Every option, core ones first, in the order of the macros.
inline constexpr option_info server_option_table[] = {
#define BPS_CORE_ROW(member, type, kind, dflt, lo, hi, zero, doc) \
  {#member, option_kind::kind, option_user::core, dflt, lo, hi, zero, "", "", doc},
    BPS_CORE_OPTIONS(BPS_CORE_ROW)
#undef BPS_CORE_ROW
#define BPS_PYTHON_ROW(key, kind, dflt, lo, hi, zero, default_text, choices, doc) \
  {key, option_kind::kind, option_user::python, dflt, lo, hi, zero, default_text, choices, doc},
        BPS_PYTHON_OPTIONS(BPS_PYTHON_ROW)
#undef BPS_PYTHON_ROW
};

/// The row of `key`, or nullptr.
inline const option_info* find_option(std::string_view key) {
  for (const auto& row : server_option_table)
    if (key == row.key) return &row;
  return nullptr;
}

/// Sets the core option `key` to `value`, in the table's unit (milliseconds
/// for timespans, 0 or 1 for flags). Throws std::invalid_argument for a key
/// that is not a core option (a Python-side one included: the core must not
/// be sent what it ignores), std::out_of_range outside the option's range.
inline void set_option(server_options& o, std::string_view key, std::int64_t value) {
  const option_info* row = find_option(key);
  if (!row || row->user != option_user::core)
    throw std::invalid_argument("unknown core server option " + std::string(key));
  if (value < row->min || value > row->max)
    throw std::out_of_range("server option " + std::string(key) + " = " + std::to_string(value) + " is not in " +
                            std::to_string(row->min) + " to " + std::to_string(row->max));
#define BPS_OPTION_SET(member, type, kind, dflt, lo, hi, zero, doc) \
  if (key == #member) {                                             \
    o.member = type(value);                                         \
    return;                                                         \
  }
  BPS_CORE_OPTIONS(BPS_OPTION_SET)
#undef BPS_OPTION_SET
}

}  // namespace baseplate
