#include "trace.hpp"

namespace baseplate {
namespace {
bool all_hex(std::string_view s) {
  if (s.empty()) return false;
  for (char c : s)
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  return true;
}
}  // namespace

bool parse_traceparent(std::string_view v, trace_context& out) {
  // version "-" trace-id "-" parent-id "-" flags, lower-case hex (W3C Trace Context)
  if (v.size() < 55 || v[2] != '-' || v[35] != '-' || v[52] != '-') return false;
  auto version = v.substr(0, 2), trace = v.substr(3, 32), span = v.substr(36, 16), flags = v.substr(53, 2);
  if (!all_hex(version) || version == "ff" || !all_hex(trace) || !all_hex(span) || !all_hex(flags)) return false;
  if (trace == std::string_view("00000000000000000000000000000000") || span == std::string_view("0000000000000000"))
    return false;
  out.trace_id = std::string(trace);
  out.span_id = std::string(span);
  return true;
}

}  // namespace baseplate

namespace baseplate {

trace_context resolve_trace(std::string_view baseplate_trace, std::string_view baseplate_span,
                            std::string_view traceparent) {
  trace_context tc;
  if (!traceparent.empty() && parse_traceparent(traceparent, tc)) return tc;
  if (!baseplate_trace.empty()) {
    tc.trace_id = std::string(baseplate_trace);
    tc.span_id = std::string(baseplate_span);
  }
  return tc;
}

}  // namespace baseplate
