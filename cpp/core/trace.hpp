#pragma once
/// Trace ids carried by requests: baseplate's own headers (HTTP X-Trace /
/// X-Span, THeader Trace / Span) and W3C traceparent.
#include <string>
#include <string_view>

namespace baseplate {

struct trace_context {
  std::string trace_id;  ///< empty when the request carries none
  std::string span_id;
};

/// Reads a W3C traceparent ("00-<32 hex>-<16 hex>-<2 hex>"); false if invalid.
bool parse_traceparent(std::string_view value, trace_context& out);

}  // namespace baseplate
