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

/// The trace context of a request, from baseplate's headers (HTTP X-Trace /
/// X-Span, THeader Trace / Span) and W3C traceparent, with the precedence of
/// baseplate.py 2.7's OpenTelemetry propagators, so that the ids the server
/// logs are the ones the app's span gets: they extract in turn, a later
/// valid header overriding an earlier one, and traceparent comes last. So a
/// valid traceparent wins; else the baseplate ids (as given, even when they
/// are not the decimal numbers its propagators require); else none.
trace_context resolve_trace(std::string_view baseplate_trace, std::string_view baseplate_span,
                            std::string_view traceparent);

}  // namespace baseplate
