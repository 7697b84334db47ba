#include "response_head.hpp"

#include <boost/beast/http/status.hpp>

#include <array>
#include <charconv>
#include <string_view>

namespace baseplate::http {
namespace {

/// RFC 9110 section 5.6.2: tchar, as a table (this runs for every header
/// of every response).
constexpr std::array<bool, 256> tchar_table = [] {
  std::array<bool, 256> t{};
  for (int c = '0'; c <= '9'; ++c) t[c] = true;
  for (int c = 'a'; c <= 'z'; ++c) t[c] = true;
  for (int c = 'A'; c <= 'Z'; ++c) t[c] = true;
  for (char c : std::string_view("!#$%&'*+-.^_`|~")) t[static_cast<unsigned char>(c)] = true;
  return t;
}();

bool is_tchar(unsigned char c) { return tchar_table[c]; }

/// `a` equals `lower` (lower-case letters and '-'), ignoring the case of
/// `a`. Only for names already checked as tokens: OR-ing 0x20 maps A-Z to
/// a-z and keeps '-', and no other token character maps onto those.
bool iequals_lower(std::string_view a, std::string_view lower) {
  if (a.size() != lower.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i)
    if ((static_cast<unsigned char>(a[i]) | 0x20) != static_cast<unsigned char>(lower[i])) return false;
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
  bool bad = false;
  for (unsigned char c : value) bad |= (c < 0x20 && c != '\t') | (c == 0x7f);  // no branch per byte
  if (bad) return std::string("control character in header value");
  return std::nullopt;
}

std::optional<std::string> inspect(const response_head& head, framing& out) {
  // 1xx are interim: an app's one response must be final.
  if (head.status < 200 || head.status > 999) return "invalid final status code " + std::to_string(head.status);
  if (auto e = check_field_value(head.reason)) return "reason phrase: " + *e;
  for (const auto& [name, value] : head.headers) {
    if (auto e = check_field_name(name)) return e;
    if (auto e = check_field_value(value)) return *e + " (" + name + ")";
    if (iequals_lower(name, "content-length")) {
      std::uint64_t n = 0;
      auto [p, ec] = std::from_chars(value.data(), value.data() + value.size(), n);
      if (ec != std::errc() || p != value.data() + value.size() || value.empty())
        return "invalid Content-Length " + value;
      if (out.content_length && *out.content_length != n) return std::string("conflicting Content-Length headers");
      out.content_length = n;
    } else if (iequals_lower(name, "transfer-encoding")) {
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
