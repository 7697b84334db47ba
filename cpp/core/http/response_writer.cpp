#include "response_writer.hpp"

#include <boost/beast/http/status.hpp>

#include <array>
#include <charconv>
#include <cstring>
#include <ctime>

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

/// `a` equals `lower` (lower-case letters and '-'), ignoring the case of
/// `a`. Only for names already checked as tokens: OR-ing 0x20 maps A-Z to
/// a-z and keeps '-', and no other token character maps onto those.
bool iequals_lower(std::string_view a, std::string_view lower) {
  if (a.size() != lower.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i)
    if ((static_cast<unsigned char>(a[i]) | 0x20) != static_cast<unsigned char>(lower[i])) return false;
  return true;
}

/// True when a Connection header value lists the "close" option.
bool lists_close(std::string_view value) {
  std::size_t i = 0;
  while (i < value.size()) {
    std::size_t end = value.find(',', i);
    if (end == std::string_view::npos) end = value.size();
    auto token = value.substr(i, end - i);
    while (!token.empty() && (token.front() == ' ' || token.front() == '\t')) token.remove_prefix(1);
    while (!token.empty() && (token.back() == ' ' || token.back() == '\t')) token.remove_suffix(1);
    if (token.size() == 5 && iequals_lower(token, "close")) return true;
    i = end + 1;
  }
  return false;
}

void append_number(std::string& out, std::uint64_t n, int base = 10) {
  char buf[24];
  auto r = std::to_chars(buf, buf + sizeof buf, n, base);
  out.append(buf, static_cast<std::size_t>(r.ptr - buf));
}

}  // namespace

std::optional<std::string> check_field_name(std::string_view name) {
  if (name.empty()) return std::string("empty header name");
  for (unsigned char c : name)
    if (!tchar_table[c]) return "invalid character in header name " + std::string(name);
  return std::nullopt;
}

std::optional<std::string> check_field_value(std::string_view value) {
  // RFC 9110 section 5.5: visible characters, spaces, tabs and obs-text.
  bool bad = false;
  for (unsigned char c : value) bad |= (c < 0x20 && c != '\t') | (c == 0x7f);  // no branch per byte
  if (bad) return std::string("control character in header value");
  return std::nullopt;
}

std::string_view reason_phrase(unsigned status) {
  if (status > 999) return {};
  auto s = boost::beast::http::obsolete_reason(static_cast<boost::beast::http::status>(status));
  std::string_view r(s.data(), s.size());
  return r == "<unknown-status>" ? std::string_view() : r;
}

std::string_view http_date() {
  static constexpr const char* days[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
  static constexpr const char* months[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                           "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
  thread_local std::time_t last = -1;
  thread_local char buf[32];
  std::time_t now = std::time(nullptr);
  if (now != last) {
    // Formatted by hand: strftime's %a and %b follow the C locale.
    std::tm t{};
    gmtime_r(&now, &t);
    std::snprintf(buf, sizeof buf, "%s, %02d %s %04d %02d:%02d:%02d GMT", days[t.tm_wday % 7], t.tm_mday,
                  months[t.tm_mon % 12], t.tm_year + 1900, t.tm_hour, t.tm_min, t.tm_sec);
    last = now;
  }
  return {buf, 29};
}

void response_writer::begin(unsigned version, bool head_request, bool keep_alive) {
  version_ = version;
  head_request_ = head_request;
  keep_alive_ = keep_alive;
  head_sent_ = finished_ = false;
  mode_ = body_mode::none;
  remaining_ = 0;
  status_ = 0;
  body_bytes_ = 0;
}

response_part response_writer::stock_reply(unsigned status) {
  response_part part;
  // Constant fields: nothing to check (fields_checked).
  part.head = response_head{status, std::nullopt, {{"Content-Type", "text/plain"}, {"Connection", "close"}}, true};
  part.body = std::string(reason_phrase(status)) + "\n";
  part.last = true;
  return part;
}

response_writer::outcome response_writer::frame(const response_part& part, bool close_after) {
  head_.clear();
  tail_.clear();
  body_ = {};
  why_.clear();
  outcome result = outcome::ok;
  std::string_view data = part.data();
  if (part.head) {
    if (head_sent_) {
      why_ = "app sent a second response head";
      return outcome::refused;
    }
    result = frame_head(*part.head, part, close_after);
    if (result == outcome::replaced) {
      // frame_head framed the stock 500, body included.
      finished_ = true;
      return result;
    }
  } else if (!head_sent_) {
    why_ = "app sent body bytes before a response head";
    return outcome::refused;
  } else if (finished_) {
    why_ = "app wrote after the last part";
    return outcome::refused;
  }

  std::size_t len = data.size();
  switch (mode_) {
    case body_mode::none:
      len = 0;
      break;
    case body_mode::length:
      if (len > remaining_) {
        why_ = "app wrote more than its Content-Length; the excess is dropped";
        len = static_cast<std::size_t>(remaining_);
        keep_alive_ = false;
      }
      remaining_ -= len;
      break;
    case body_mode::chunked:
      if (len > 0) {
        append_number(head_, len, 16);
        head_.append("\r\n");
        tail_.append("\r\n");
      }
      if (part.last) tail_.append("0\r\n\r\n");
      break;
    case body_mode::until_close:
      break;
  }
  if (part.last && mode_ == body_mode::length && remaining_ > 0) {
    // The app sent less than it declared: the client can only find the end
    // of this response by the connection closing.
    why_ = "app sent less than its Content-Length; closing the connection";
    keep_alive_ = false;
  }
  body_ = data.substr(0, len);
  body_bytes_ += len;
  if (part.last) finished_ = true;
  return result;
}

response_writer::outcome response_writer::frame_head(const response_head& head, const response_part& part,
                                                     bool close_after) {
  // Check everything before writing anything.
  std::optional<std::uint64_t> length;
  bool app_close = false, app_date = false, app_dropped = false;
  std::optional<std::string> error;
  const bool check = !head.fields_checked;
  if (head.status < 200 || head.status > 999)
    error = "invalid final status code " + std::to_string(head.status);
  else if (head.reason && check)
    if (auto e = check_field_value(*head.reason)) error = "reason phrase: " + *e;
  for (const auto& [name, value] : head.headers) {
    if (error) break;
    if (auto e = check ? check_field_name(name) : std::nullopt) {
      error = e;
    } else if (auto e2 = check ? check_field_value(value) : std::nullopt) {
      error = *e2 + " (" + name + ")";
    } else if (iequals_lower(name, "content-length")) {
      std::uint64_t n = 0;
      auto [p, ec] = std::from_chars(value.data(), value.data() + value.size(), n);
      if (ec != std::errc() || p != value.data() + value.size() || value.empty())
        error = "invalid Content-Length " + value;
      else if (length && *length != n)
        error = "conflicting Content-Length headers";
      else
        length = n;
    } else if (iequals_lower(name, "connection")) {
      app_close = app_close || lists_close(value);
      app_dropped = true;
    } else if (iequals_lower(name, "date")) {
      app_date = true;
    } else if (iequals_lower(name, "transfer-encoding")) {
      app_dropped = true;
    }
  }
  if (error) {
    why_ = "app sent an invalid response head: " + *error;
    auto stock = stock_reply(500);
    keep_alive_ = false;
    head_sent_ = true;
    status_ = 500;
    head_.append(version_ == 10 ? "HTTP/1.0 500 Internal Server Error\r\n" : "HTTP/1.1 500 Internal Server Error\r\n");
    head_.append("Content-Type: text/plain\r\nContent-Length: ");
    append_number(head_, stock.body.size());
    head_.append("\r\nDate: ");
    head_.append(http_date());
    head_.append("\r\nConnection: close\r\n\r\n");
    // The body is a constant: no part owns it.
    static const std::string body = stock.body;
    body_ = head_request_ ? std::string_view() : std::string_view(body);
    body_bytes_ = body_.size();
    mode_ = body_mode::none;
    return outcome::replaced;
  }

  unsigned status = head.status;
  status_ = status;
  keep_alive_ = keep_alive_ && !close_after && !app_close;
  bool no_body = status_has_no_body(status);
  // The framing header to add, if any, and the mode.
  std::optional<std::uint64_t> add_length;
  bool add_chunked = false;
  if (no_body) {
    mode_ = body_mode::none;
  } else if (head_request_) {
    // Describe the GET reply where we can; never claim an empty body we
    // did not see.
    mode_ = body_mode::none;
    if (!length && part.last && !part.data().empty()) add_length = part.data().size();
  } else if (length) {
    mode_ = body_mode::length;
    remaining_ = *length;
  } else if (part.last) {
    mode_ = body_mode::length;
    remaining_ = part.data().size();
    add_length = remaining_;
  } else if (version_ == 11) {
    mode_ = body_mode::chunked;
    add_chunked = true;
  } else {
    mode_ = body_mode::until_close;
    keep_alive_ = false;
  }
  bool drop_length = status < 200 || status == 204;  // RFC 9110 section 8.6

  // Formatted in one pass into a buffer sized for it (head_ keeps its
  // capacity across responses): no append per piece.
  std::string_view reason = head.reason ? std::string_view(*head.reason) : reason_phrase(status);
  // Fields the server frames itself are dropped; the names are compared
  // again only when the check above found one.
  const bool filter = app_dropped || (drop_length && length);
  auto dropped = [&](const std::string& name) {
    return filter && (iequals_lower(name, "transfer-encoding") || iequals_lower(name, "connection") ||
                      (drop_length && iequals_lower(name, "content-length")));
  };
  std::size_t size = 9 + 4 + reason.size() + 2 + 2;  // status line, final CRLF
  for (const auto& [name, value] : head.headers) size += name.size() + value.size() + 4;
  constexpr std::string_view cl = "Content-Length: ", te = "Transfer-Encoding: chunked\r\n", date = "Date: ",
                             conn_close = "Connection: close\r\n", keep = "Connection: keep-alive\r\n";
  size += cl.size() + 20 + 2 + te.size() + date.size() + 29 + 2 + keep.size();
  head_.resize(size);
  char* const start = head_.data();
  char* p = start;
  auto put = [&p](std::string_view v) {
    if (v.empty()) return;  // data() may be null (an empty reason phrase)
    std::memcpy(p, v.data(), v.size());
    p += v.size();
  };
  put(version_ == 10 ? "HTTP/1.0 " : "HTTP/1.1 ");
  *p++ = static_cast<char>('0' + status / 100 % 10);
  *p++ = static_cast<char>('0' + status / 10 % 10);
  *p++ = static_cast<char>('0' + status % 10);
  *p++ = ' ';
  put(reason);
  put("\r\n");
  for (const auto& [name, value] : head.headers) {
    if (dropped(name)) continue;
    put(name);
    put(": ");
    put(value);
    put("\r\n");
  }
  if (add_length) {
    put(cl);
    p = std::to_chars(p, p + 20, *add_length).ptr;
    put("\r\n");
  }
  if (add_chunked) put(te);
  if (!app_date) {
    put(date);
    put(http_date());
    put("\r\n");
  }
  if (!keep_alive_)
    put(conn_close);
  else if (version_ == 10)
    put(keep);
  put("\r\n");
  head_.resize(static_cast<std::size_t>(p - start));
  head_sent_ = true;
  return outcome::ok;
}

std::optional<std::uint64_t> response_writer::file_allowance(std::uint64_t count) const {
  switch (mode_) {
    case body_mode::none:
      return 0;
    case body_mode::length:
      return std::min(count, remaining_);
    case body_mode::until_close:
      return count;
    case body_mode::chunked:
      break;
  }
  return std::nullopt;  // sendfile cannot frame chunks
}

void response_writer::account(std::uint64_t sent) {
  if (mode_ == body_mode::length) remaining_ -= std::min(sent, remaining_);
  body_bytes_ += sent;
}

}  // namespace baseplate::http
