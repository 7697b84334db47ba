#pragma once
/// Checking and serialising the response heads apps give. Written by hand
/// rather than with beast::http::fields: the app's header list is already in
/// wire order, and one pass that validates and appends into the
/// connection's output buffer is what the request path needs (Beast still
/// parses every request).
#include <baseplate/http/response.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace baseplate::http {

/// How the connection frames the body that follows a head.
struct framing {
  /// Content-Length the app declared, if any.
  std::optional<std::uint64_t> content_length;
  /// Whether the app set Transfer-Encoding itself.
  bool app_transfer_encoding = false;
};

/// Returns an error text if a name is not an RFC 9110 token.
std::optional<std::string> check_field_name(std::string_view name);
/// Returns an error text if a value holds CR, LF or NUL (header injection).
std::optional<std::string> check_field_value(std::string_view value);

/// Inspects the app's headers: Content-Length, Transfer-Encoding, and
/// validity. Returns an error text for a head that must not be sent.
std::optional<std::string> inspect(const response_head& head, framing& out);

/// The standard reason phrase for a status code ("Unknown" if none).
std::string_view reason_phrase(unsigned status);

/// True for statuses that never carry a body (1xx, 204, 304).
inline bool status_has_no_body(unsigned status) { return status < 200 || status == 204 || status == 304; }

/// Appends "HTTP/1.x code reason\r\n" and the app's headers (no final CRLF).
void append_head(std::string& out, unsigned version, const response_head& head);

}  // namespace baseplate::http
