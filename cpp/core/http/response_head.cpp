#include "response_head.hpp"

#include <boost/beast/http/status.hpp>

#include <charconv>

namespace baseplate::http {
namespace {

bool is_tchar(unsigned char c) {
  if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) return true;
  switch (c) {
    case '!': case '#': case '$': case '%': case '&': case '\'': case '*': case '+':
    case '-': case '.': case '^': case '_': case '`': case '|': case '~':
      return true;
    default:
      return false;
  }
}

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    unsigned char x = static_cast<unsigned char>(a[i]), y = static_cast<unsigned char>(b[i]);
    if (x >= 'A' && x <= 'Z') x = static_cast<unsigned char>(x + 32);
    if (y >= 'A' && y <= 'Z') y = static_cast<unsigned char>(y + 32);
    if (x != y) return false;
  }
  return true;
}

}  // namespace

std::optional<std::string> check_field_name(std::string_view name) {
  if (name.empty()) return std::string("empty header name");
  for (unsigned char c : name)
    if (!is_tchar(c)) return "invalid character in header name " + std::string(name);
  return std::nullopt;
}

std::optional<std::string> check_field_value(std::string_view value) {
  // RFC 9110 section 5.5: visible characters, spaces, tabs and obs-text.
  for (unsigned char c : value)
    if ((c < 0x20 && c != '\t') || c == 0x7f) return std::string("control character in header value");
  return std::nullopt;
}

std::optional<std::string> inspect(const response_head& head, framing& out) {
  // 1xx are interim: an app's one response must be final.
  if (head.status < 200 || head.status > 999) return "invalid final status code " + std::to_string(head.status);
  if (auto e = check_field_value(head.reason)) return "reason phrase: " + *e;
  for (const auto& [name, value] : head.headers) {
    if (auto e = check_field_name(name)) return e;
    if (auto e = check_field_value(value)) return *e + " (" + name + ")";
    if (iequals(name, "content-length")) {
      std::uint64_t n = 0;
      auto [p, ec] = std::from_chars(value.data(), value.data() + value.size(), n);
      if (ec != std::errc() || p != value.data() + value.size() || value.empty())
        return "invalid Content-Length " + value;
      if (out.content_length && *out.content_length != n) return std::string("conflicting Content-Length headers");
      out.content_length = n;
    } else if (iequals(name, "transfer-encoding")) {
      out.app_transfer_encoding = true;
    }
  }
  return std::nullopt;
}

std::string_view reason_phrase(unsigned status) {
  auto s = boost::beast::http::obsolete_reason(static_cast<boost::beast::http::status>(status));
  return {s.data(), s.size()};
}

void append_head(std::string& out, unsigned version, const response_head& head) {
  out.append(version == 10 ? "HTTP/1.0 " : "HTTP/1.1 ");
  char code[4];
  code[0] = static_cast<char>('0' + head.status / 100 % 10);
  code[1] = static_cast<char>('0' + head.status / 10 % 10);
  code[2] = static_cast<char>('0' + head.status % 10);
  code[3] = ' ';
  out.append(code, 4);
  if (head.reason.empty())
    out.append(reason_phrase(head.status));
  else
    out.append(head.reason);
  out.append("\r\n");
  for (const auto& [name, value] : head.headers) {
    out.append(name);
    out.append(": ");
    out.append(value);
    out.append("\r\n");
  }
}

}  // namespace baseplate::http
