#include "log.hpp"

#include <boost/log/attributes/value_extraction.hpp>
#include <boost/log/core.hpp>
#include <boost/log/expressions.hpp>
#include <boost/log/sinks/basic_sink_backend.hpp>
#include <boost/log/sinks/unlocked_frontend.hpp>
#include <boost/log/sources/record_ostream.hpp>
#include <boost/log/sources/severity_logger.hpp>
#include <boost/log/utility/manipulators/add_value.hpp>

#include <atomic>
#include <cstdio>
#include <memory>
#include <mutex>

namespace baseplate::log {
namespace bl = boost::log;

namespace {

std::mutex sink_mutex;
std::shared_ptr<sink> current_sink;
std::atomic<int> threshold{static_cast<int>(level::info)};
const std::string no_trace = "-";
thread_local const std::string* trace = &no_trace;

/// The Boost.Log backend: hands each record to the host's sink.
class host_backend : public bl::sinks::basic_sink_backend<bl::sinks::concurrent_feeding> {
 public:
  void consume(const bl::record_view& rec) {
    record r;
    r.lvl = bl::extract_or_default<level>("Severity", rec, level::info);
    r.logger = bl::extract_or_default<std::string>("Channel", rec, std::string("baseplate_serve"));
    r.message = bl::extract_or_default<std::string>("Message", rec, std::string());
    r.trace_id = bl::extract_or_default<std::string>("TraceId", rec, no_trace);
    std::shared_ptr<sink> s;
    {
      std::lock_guard<std::mutex> lk(sink_mutex);
      s = current_sink;
    }
    if (s) {
      (*s)(std::move(r));
    } else {
      std::fprintf(stderr, "%d %s [%s] %s\n", static_cast<int>(r.lvl), r.logger.c_str(), r.trace_id.c_str(),
                   r.message.c_str());
    }
  }
};

/// Installs the backend once, on first use.
bl::sources::severity_logger_mt<level>& logger() {
  static bl::sources::severity_logger_mt<level>* lg = [] {
    bl::core::get()->add_sink(boost::make_shared<bl::sinks::unlocked_sink<host_backend>>());
    return new bl::sources::severity_logger_mt<level>();  // leaked: lives until exit
  }();
  return *lg;
}

}  // namespace

void set_sink(sink s) {
  std::lock_guard<std::mutex> lk(sink_mutex);
  current_sink = s ? std::make_shared<sink>(std::move(s)) : nullptr;
}

void set_threshold(level l) { threshold.store(static_cast<int>(l), std::memory_order_relaxed); }

bool enabled(level l) { return static_cast<int>(l) >= threshold.load(std::memory_order_relaxed); }

void write(level l, std::string_view name, std::string message) {
  if (!enabled(l)) return;
  auto& lg = logger();
  BOOST_LOG_SEV(lg, l) << bl::add_value("Channel", std::string(name)) << bl::add_value("TraceId", *trace)
                       << message;
}

scoped_trace::scoped_trace(const std::string& trace_id) : previous_(trace) { trace = &trace_id; }
scoped_trace::~scoped_trace() { trace = previous_; }

const std::string& current_trace_id() { return *trace; }

}  // namespace baseplate::log
