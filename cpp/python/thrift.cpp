#include "thrift.hpp"

#include "dispatch.hpp"
#include "trace.hpp"

namespace baseplate::python {

thrift_runner::thrift_runner(py::object processor)
    : processor_(std::move(processor)),
      process_call_(py::module_::import("baseplate_serve._thrift").attr("process_call")),
      logger_(py::module_::import("logging").attr("getLogger")("baseplate_serve.thrift")) {}

void thrift_runner::run(std::shared_ptr<thrift::call> c) {
  auto header = [&](const char* name) -> std::string_view {
    auto it = c->headers().find(name);
    return it == c->headers().end() ? std::string_view() : std::string_view(it->second);
  };
  auto tc = resolve_trace(header("Trace"), header("Span"), header("traceparent"));
  trace_scope trace(tc.trace_id, tc.span_id);
  try {
    py::dict headers;
    for (const auto& [k, v] : c->headers()) headers[py::bytes(k)] = py::bytes(v);
    auto payload = c->payload();
    py::tuple result = process_call_(processor_, py::bytes(payload.data(), payload.size()), headers, c->protocol_id());
    thrift::headers_map reply_headers;
    for (auto item : py::reinterpret_borrow<py::dict>(result[1]))
      reply_headers.emplace(item.first.cast<std::string>(), item.second.cast<std::string>());
    c->reply(result[0].cast<std::string>(), std::move(reply_headers), result[2].cast<bool>());
  } catch (py::error_already_set& e) {
    // The generated processors answer app exceptions themselves; what
    // arrives here broke the protocol (a malformed message): drop the
    // connection, keep serving.
    // Generated processors answer the app's own exceptions; what escapes
    // process() is a request it could not decode: one line, as for a bad frame.
    logger_.attr("warning")("closing Thrift connection from %s: undecodable request (%s: %s)", c->peer(),
                            e.type().attr("__name__"), py::str(e.value()));
    c->fail();
  }
}

}  // namespace baseplate::python
