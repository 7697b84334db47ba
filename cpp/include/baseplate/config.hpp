#pragma once
/// Configuration parsing for native (C++) apps: the parsers and specs of
/// baseplate.py's `baseplate.lib.config` (2.7), with the same accepted
/// inputs, results and error messages. The reference is the Python module
/// python/baseplate_serve/config.py; tests/vectors/config_vectors.json is
/// the table both implementations are checked against.
///
/// The raw configuration
/// ---------------------
/// A native app receives the options of its `[app:main]` section as a
/// `boost::property_tree::ptree` (`raw_config`). The server builds it with
/// ptree's default '.' path separator, `put("noodles.count", "3")`, so an
/// option is the node at the path of its dotted name and
/// `get<int>("noodles.count")` reads it. Split at its dots, a set of option
/// names is a tree of name segments; baseplate.py only ever looks options up
/// by whole name and finds DictOf members by segment, so that tree loses
/// nothing it needs (a missing option and an empty one both read as "").
/// The parsers here also take children whose keys hold dots, as read_ini(),
/// `push_back({"noodles.count", ptree("3")})` or
/// `put(ptree::path_type("noodles.count", '\0'), "3")` make them, and mixes
/// of both: an option's name is the keys from the root down to it, joined
/// with dots; nodes that only lead to deeper options (children, no data) are
/// not options; the root's own data is the option named "". parse_config()
/// lists the options in tree order (so DictOf members come in the order they
/// first appeared, as in baseplate.py) and then works on that list exactly as
/// baseplate.py works on its dict; if two nodes spell the same name, the later
/// one's value wins, as a dict update would.
///
/// Usage
/// -----
///     namespace cfg = baseplate::config;
///     struct settings {
///       std::int64_t port = 0;
///       std::chrono::microseconds read_timeout{};
///       std::vector<std::string> hosts;
///       double sample_rate = 0;
///       std::map<std::string, std::int64_t> population;
///     } s;
///     cfg::parse_config(app_config, cfg::spec()
///         .add("port", cfg::Integer, &s.port)
///         .add("timeouts", cfg::spec().add("read", cfg::Timespan, &s.read_timeout))
///         .add("hosts", cfg::TupleOf(cfg::String), &s.hosts)
///         .add("sample_rate", cfg::Optional(cfg::Percent, 0.1), &s.sample_rate)
///         .add("population", cfg::DictOf(cfg::Integer, &s.population)));
///
/// A parser is any callable taking the raw text (`const std::string&`) and
/// returning a value. A spec maps option names to parsers (each with a sink:
/// a pointer to store into, or a callable taking the value), to nested specs
/// (options `<name>.<option>`) and to DictOf groups. parse_config() walks the
/// spec in order, like baseplate.py, and hands every value to its sink.
///
/// Types and exceptions
/// --------------------
/// Python int -> std::int64_t; float -> double; str -> std::string; bytes
/// (Base64) -> std::string; datetime.timedelta -> std::chrono::microseconds;
/// InfiniteTimespan -> infinite_timespan_t; EndpointConfiguration ->
/// endpoint_configuration; list (TupleOf) -> std::vector; Optional(p) ->
/// std::optional; Fallback of two result types -> std::variant.
/// Python's ValueError (and its subclass binascii.Error) is
/// std::invalid_argument, OverflowError is std::overflow_error, the
/// AssertionError "dots are not allowed in keys" is std::logic_error, and
/// ConfigurationError is configuration_error. Messages are Python's, quoting
/// values the way Python's repr() does.
///
/// Not mirrored (the C++ side of the vector table skips exactly these)
/// ---------------------------------------------------------------------
/// - Parser File (tag `filesystem`): it returns an open Python file object and
///   its errors are those of Python's open(); C++ apps open files themselves.
/// - Tag `non-ascii`: the parsers work on bytes. Non-ASCII bytes are never
///   digits nor whitespace here, while Python's int()/float()/split()/strip()
///   take any Unicode decimal digit or space; and repr() quoting copies
///   non-ASCII characters as they are, except C1 controls, U+00A0, U+00AD,
///   Unicode spaces/separators and common format characters, which it escapes
///   as Python does (Python also escapes unassigned and rarer non-printable
///   code points, which are copied here).
/// - Tag `bigint`: integers are std::int64_t; a value outside its range is a
///   std::overflow_error (Python's int is unbounded).
/// - Tag `regex`: DictOf finds members under the literal key path; baseplate.py
///   builds a regular expression escaping only the dots of the key path.
/// - Timespans whose result lies outside std::chrono::microseconds
///   (magnitude over 106751991 days; Python allows up to 999999999 days) are
///   a std::overflow_error.
/// - Invalid specs (spec items that are neither parsers nor specs, e.g. 37):
///   the C++ spec only accepts options, specs and DictOf groups.
/// Mirrored, including quirks: Python's int() and float() syntax (signs,
/// surrounding ASCII whitespace, single underscores between digits, 0x/0o/0b
/// prefixes, base 0, the 4300-digit limit of CPython 3.11, inf/nan),
/// timedelta's rounding and range errors, tags `env`, `system-db` (UnixUser,
/// UnixGroup) and `int-max-str-digits`.
#include <boost/property_tree/ptree.hpp>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <climits>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <exception>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

#include <grp.h>
#include <pwd.h>

namespace baseplate::config {

/// The raw options of an app: a ptree whose paths (or dotted keys) are the option names.
using raw_config = boost::property_tree::ptree;

namespace detail {

/// The options of a raw_config as baseplate.py's dict: names and values, in order.
struct flat_config {
  /// (name, value) pairs in order.
  std::vector<std::pair<std::string, std::string>> options;
  /// Name to position in `options`.
  std::map<std::string, std::size_t> index;

  /// Set `name` to `value`; an existing name keeps its position.
  void set(const std::string& name, const std::string& value) {
    const auto [it, added] = index.emplace(name, options.size());
    if (added)
      options.emplace_back(name, value);
    else
      options[it->second].second = value;
  }
  /// The value of `name`, or "" when it is missing.
  std::string get(const std::string& name) const {
    const auto it = index.find(name);
    return it == index.end() ? std::string() : options[it->second].second;
  }
};

/// Add `node` (named `name`) and the nodes below it to `out`; the root's name is "".
inline void flatten(const raw_config& node, const std::string& name, bool root, flat_config& out) {
  if (root ? !node.data().empty() : (!node.data().empty() || node.empty())) out.set(name, node.data());
  for (const auto& [key, child] : node) flatten(child, root ? key : name + "." + key, false, out);
}

/// List the options of `raw` (see "The raw configuration" above).
inline flat_config flatten(const raw_config& raw) {
  flat_config out;
  flatten(raw, std::string(), true, out);
  return out;
}

}  // namespace detail

/// Set option `name` to `value` the way the server does: `put(name, value)` (a path of its dots).
inline void set_option(raw_config& raw, const std::string& name, const std::string& value) { raw.put(name, value); }

/// The value of option `name` in any of the accepted forms, or "" when it is missing.
inline std::string get_option(const raw_config& raw, const std::string& name) {
  return detail::flatten(raw).get(name);
}

/// An option violates the spec (baseplate.py's ConfigurationError): what() is "key: error".
class [[gnu::visibility("default")]] configuration_error : public std::runtime_error {
 public:
  /// `key` is the full dotted option name; `cause` is the parser's exception, if any.
  configuration_error(std::string key, std::string error, std::exception_ptr cause = nullptr)
      : std::runtime_error(key + ": " + error),
        key_(std::move(key)),
        error_(std::move(error)),
        cause_(std::move(cause)) {}

  /// The full dotted name of the offending option.
  const std::string& key() const noexcept { return key_; }
  /// What is wrong with it: the message of the parser's exception.
  const std::string& error() const noexcept { return error_; }
  /// The parser's exception (rethrow it to inspect its type); null if none.
  const std::exception_ptr& cause() const noexcept { return cause_; }

 private:
  std::string key_;
  std::string error_;
  std::exception_ptr cause_;
};

/// Address families of an endpoint (socket.AF_INET, socket.AF_UNIX).
enum class address_family { inet, unix_domain };

/// A host and TCP port (InternetAddress); like baseplate.py, the port is not range-checked.
struct internet_address {
  /// Host name or address, as written (may be empty).
  std::string host;
  /// Port, as written.
  std::int64_t port = 0;
  /// Field-wise equality.
  friend bool operator==(const internet_address& a, const internet_address& b) {
    return a.host == b.host && a.port == b.port;
  }
  /// Field-wise inequality.
  friend bool operator!=(const internet_address& a, const internet_address& b) { return !(a == b); }
};

/// A remote endpoint (EndpointConfiguration): an internet address or a UNIX socket path.
struct endpoint_configuration {
  /// Which of `inet` and `unix_path` is meaningful.
  address_family family = address_family::inet;
  /// The address when family is inet.
  internet_address inet;
  /// The socket's path when family is unix_domain.
  std::string unix_path;
  /// "host:port" or the path, as Python's str().
  std::string to_string() const {
    return family == address_family::inet ? inet.host + ":" + std::to_string(inet.port) : unix_path;
  }
  /// Equality of the family and of its address.
  friend bool operator==(const endpoint_configuration& a, const endpoint_configuration& b) {
    if (a.family != b.family) return false;
    return a.family == address_family::inet ? a.inet == b.inet : a.unix_path == b.unix_path;
  }
  /// Inequality.
  friend bool operator!=(const endpoint_configuration& a, const endpoint_configuration& b) { return !(a == b); }
};

/// The type of InfiniteTimespan, what TimespanOrInfinite returns for "infinite".
struct infinite_timespan_t {
  /// All values are equal.
  friend bool operator==(infinite_timespan_t, infinite_timespan_t) { return true; }
  /// All values are equal.
  friend bool operator!=(infinite_timespan_t, infinite_timespan_t) { return false; }
};
/// The value TimespanOrInfinite returns for "infinite".
inline constexpr infinite_timespan_t InfiniteTimespan{};
/// What TimespanOrInfinite returns: a timespan or InfiniteTimespan.
using timespan_or_infinite = std::variant<std::chrono::microseconds, infinite_timespan_t>;

namespace detail {

__extension__ typedef __int128 int128;

/// The value type a parser returns.
template <class Parser>
using result_t = std::decay_t<std::invoke_result_t<const Parser&, const std::string&>>;

/// Whitespace of Python's int() and float(): ASCII space and \t \n \v \f \r.
inline bool py_isspace(char c) { return c == ' ' || (c >= '\t' && c <= '\r'); }

/// Whitespace of Python's str.split() and str.strip() within ASCII (adds \x1c-\x1f).
inline bool py_str_isspace(char c) { return py_isspace(c) || (c >= '\x1c' && c <= '\x1f'); }

/// Python's str.strip() (ASCII whitespace).
inline std::string py_strip(std::string_view s) {
  std::size_t b = 0, e = s.size();
  while (b < e && py_str_isspace(s[b])) ++b;
  while (e > b && py_str_isspace(s[e - 1])) --e;
  return std::string(s.substr(b, e - b));
}

/// Python's str.split() with no separator (ASCII whitespace).
inline std::vector<std::string> py_split(std::string_view s) {
  std::vector<std::string> words;
  std::size_t i = 0;
  while (i < s.size()) {
    while (i < s.size() && py_str_isspace(s[i])) ++i;
    std::size_t start = i;
    while (i < s.size() && !py_str_isspace(s[i])) ++i;
    if (i > start) words.emplace_back(s.substr(start, i - start));
  }
  return words;
}

/// Whether repr() copies a non-ASCII code point (an approximation of str.isprintable()).
inline bool py_printable(char32_t cp) {
  if (cp <= 0xa0 || cp == 0xad) return false;  // C1 controls, no-break space, soft hyphen
  if ((cp >= 0x600 && cp <= 0x605) || cp == 0x61c || cp == 0x6dd || cp == 0x70f || cp == 0x180e) return false;
  if (cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200f) || (cp >= 0x2028 && cp <= 0x202f)) return false;
  if ((cp >= 0x205f && cp <= 0x2064) || (cp >= 0x2066 && cp <= 0x206f) || cp == 0x3000) return false;
  if ((cp >= 0xd800 && cp <= 0xf8ff) || cp == 0xfeff || (cp >= 0xfff9 && cp <= 0xfffb)) return false;
  if (cp == 0xfffe || cp == 0xffff || cp == 0xe0001 || (cp >= 0xe0020 && cp <= 0xe007f)) return false;
  return cp < 0xf0000;  // planes 15 and 16 are private use
}

/// Decode one UTF-8 sequence at s[i]; false for an invalid or truncated one.
inline bool decode_utf8(std::string_view s, std::size_t i, char32_t& cp, std::size_t& len) {
  const auto b0 = static_cast<unsigned char>(s[i]);
  char32_t min;
  if (b0 >= 0xc2 && b0 <= 0xdf) {
    len = 2, cp = b0 & 0x1f, min = 0x80;
  } else if (b0 >= 0xe0 && b0 <= 0xef) {
    len = 3, cp = b0 & 0x0f, min = 0x800;
  } else if (b0 >= 0xf0 && b0 <= 0xf4) {
    len = 4, cp = b0 & 0x07, min = 0x10000;
  } else {
    return false;
  }
  if (i + len > s.size()) return false;
  for (std::size_t k = 1; k < len; ++k) {
    const auto b = static_cast<unsigned char>(s[i + k]);
    if ((b & 0xc0) != 0x80) return false;
    cp = (cp << 6) | (b & 0x3f);
  }
  return cp >= min && cp <= 0x10ffff && !(cp >= 0xd800 && cp <= 0xdfff);
}

/// `\x..`, `\u....` or `\U........` for a code point, lower-case hex.
inline std::string py_escape(char32_t cp) {
  static const char hex[] = "0123456789abcdef";
  std::string out = cp < 0x100 ? "\\x" : cp < 0x10000 ? "\\u" : "\\U";
  const int digits = cp < 0x100 ? 2 : cp < 0x10000 ? 4 : 8;
  for (int k = digits - 1; k >= 0; --k) out += hex[(cp >> (4 * k)) & 0xf];
  return out;
}

/// Python's repr() of a str holding `s` (UTF-8; an invalid byte is shown as
/// Python's surrogateescape decoding shows it, `\udcXX`).
inline std::string py_repr(std::string_view s) {
  const bool squote = s.find('\'') != std::string_view::npos;
  const bool dquote = s.find('"') != std::string_view::npos;
  const char quote = squote && !dquote ? '"' : '\'';
  std::string out(1, quote);
  for (std::size_t i = 0; i < s.size();) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c < 0x80) {
      if (c == quote || c == '\\') {
        out += '\\';
        out += static_cast<char>(c);
      } else if (c == '\t') {
        out += "\\t";
      } else if (c == '\n') {
        out += "\\n";
      } else if (c == '\r') {
        out += "\\r";
      } else if (c < 0x20 || c == 0x7f) {
        out += py_escape(c);
      } else {
        out += static_cast<char>(c);
      }
      ++i;
      continue;
    }
    char32_t cp = 0;
    std::size_t len = 0;
    if (!decode_utf8(s, i, cp, len)) {
      out += py_escape(0xdc00 + c);
      ++i;
      continue;
    }
    if (py_printable(cp))
      out.append(s.substr(i, len));
    else
      out += py_escape(cp);
    i += len;
  }
  out += quote;
  return out;
}

/// The first `n` code points of UTF-8 text (printf's "%.200R" precision).
inline std::string truncate_code_points(const std::string& s, std::size_t n) {
  std::size_t count = 0;
  for (std::size_t i = 0; i < s.size(); ++i) {
    if ((static_cast<unsigned char>(s[i]) & 0xc0) != 0x80 && count++ == n) return s.substr(0, i);
  }
  return s;
}

/// An integer as Python's int(text, base) reads it.
struct int_literal {
  /// A minus sign was given.
  bool negative = false;
  /// The absolute value, when it fits.
  std::uint64_t magnitude = 0;
  /// The absolute value is 2**64 or more.
  bool overflow = false;
  /// Base 10 only: the digits, without underscores.
  std::string decimal_digits;
};

/// Digit value of an ASCII letter or digit (37 for anything else), as CPython's table.
inline int digit_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'z') return c - 'a' + 10;
  if (c >= 'A' && c <= 'Z') return c - 'A' + 10;
  return 37;
}

/// Parse `text` as CPython 3.11's int(text, base) does; std::invalid_argument with its messages.
inline int_literal parse_int_literal(std::string_view text, int base) {
  if ((base != 0 && base < 2) || base > 36) throw std::invalid_argument("int() base must be >= 2 and <= 36, or 0");
  const auto fail = [&]() {
    throw std::invalid_argument("invalid literal for int() with base " + std::to_string(base) + ": " +
                                truncate_code_points(py_repr(text), 200));
  };
  const std::size_t n = text.size();
  std::size_t i = 0;
  while (i < n && py_isspace(text[i])) ++i;
  int_literal lit;
  if (i < n && (text[i] == '+' || text[i] == '-')) lit.negative = text[i++] == '-';
  const char c0 = i < n ? text[i] : '\0';
  const char c1 = i + 1 < n ? text[i + 1] : '\0';
  int b = base;
  bool error_if_nonzero = false;
  if (b == 0) {
    if (c0 != '0')
      b = 10;
    else if (c1 == 'x' || c1 == 'X')
      b = 16;
    else if (c1 == 'o' || c1 == 'O')
      b = 8;
    else if (c1 == 'b' || c1 == 'B')
      b = 2;
    else
      error_if_nonzero = true, b = 10;  // "old" octal such as 0600 is only valid when zero
  }
  if (c0 == '0' && ((b == 16 && (c1 == 'x' || c1 == 'X')) || (b == 8 && (c1 == 'o' || c1 == 'O')) ||
                    (b == 2 && (c1 == 'b' || c1 == 'B')))) {
    i += 2;
    if (i < n && text[i] == '_') ++i;  // one underscore may follow the prefix
  }
  if (i < n && text[i] == '_') fail();
  const std::size_t start = i;
  std::size_t digits = 0;
  char prev = '\0';
  const auto b64 = static_cast<std::uint64_t>(b);
  while (i < n && (digit_value(text[i]) < b || text[i] == '_')) {
    if (text[i] == '_') {
      if (prev == '_') fail();
    } else {
      const auto d = static_cast<std::uint64_t>(digit_value(text[i]));
      ++digits;
      if (b == 10) lit.decimal_digits += text[i];
      if (!lit.overflow) {
        if (lit.magnitude > (UINT64_MAX - d) / b64)
          lit.overflow = true;
        else
          lit.magnitude = lit.magnitude * b64 + d;
      }
    }
    prev = text[i++];
  }
  if (prev == '_') fail();
  if ((b & (b - 1)) != 0 && digits > 4300)
    throw std::invalid_argument("Exceeds the limit (4300 digits) for integer string conversion: value has " +
                                std::to_string(digits) +
                                " digits; use sys.set_int_max_str_digits() to increase the limit");
  if (error_if_nonzero && (lit.magnitude != 0 || lit.overflow)) fail();
  if (i == start) fail();
  while (i < n && py_isspace(text[i])) ++i;
  if (i != n) fail();
  return lit;
}

/// The std::int64_t value of an int_literal; std::overflow_error if out of range.
inline std::int64_t to_int64(const int_literal& lit, std::string_view text) {
  const std::uint64_t limit = lit.negative ? std::uint64_t{1} << 63 : (std::uint64_t{1} << 63) - 1;
  if (lit.overflow || lit.magnitude > limit)
    throw std::overflow_error("integer out of the range of std::int64_t: " + py_repr(text));
  return lit.negative ? static_cast<std::int64_t>(0 - lit.magnitude) : static_cast<std::int64_t>(lit.magnitude);
}

/// datetime.timedelta(microseconds=total_us): its range checks, then a std::chrono::microseconds.
inline std::chrono::microseconds timedelta_from_us(int128 total_us) {
  constexpr std::int64_t us_per_day = 86'400'000'000;
  int128 days = total_us / us_per_day;
  if (total_us % us_per_day < 0) --days;  // floor division
  if (days > INT_MAX || days < INT_MIN) throw std::overflow_error("Python int too large to convert to C int");
  const std::string days_text = "days=" + std::to_string(static_cast<long long>(days));
  if (days > 999'999'999 || days < -999'999'999)
    throw std::overflow_error(days_text + "; must have magnitude <= 999999999");
  if (total_us > INT64_MAX || total_us < INT64_MIN)
    throw std::overflow_error(days_text + "; out of the range of std::chrono::microseconds (magnitude <= 106751991)");
  return std::chrono::microseconds(static_cast<std::int64_t>(total_us));
}

/// datetime.timedelta(seconds=<float>), rounding as CPython does (half to even on the total).
inline std::chrono::microseconds timedelta_from_seconds(double seconds) {
  if (std::isnan(seconds)) throw std::invalid_argument("cannot convert float NaN to integer");
  if (std::isinf(seconds)) throw std::overflow_error("cannot convert float infinity to integer");
  double whole = 0;
  const double fraction = std::modf(seconds, &whole);
  if (std::fabs(whole) >= 0x1p100) throw std::overflow_error("Python int too large to convert to C int");
  int128 total = static_cast<int128>(whole) * 1'000'000;
  double leftover = 0;
  if (fraction != 0.0) {
    double whole_us = 0;
    leftover = std::modf(1'000'000.0 * fraction, &whole_us);
    total += static_cast<int128>(whole_us);
  }
  if (leftover != 0.0) {
    double rounded = std::round(leftover);
    if (std::fabs(rounded - leftover) == 0.5) {
      const int odd = static_cast<int>(total & 1);
      rounded = 2.0 * std::round((leftover + odd) * 0.5) - odd;
    }
    total += static_cast<long>(rounded);
  }
  return timedelta_from_us(total);
}

/// Python's truthiness of a parsed value (for DefaultFromEnv): zero, empty and none are false.
template <class T>
bool truthy(const T& value);

template <class T>
struct is_optional : std::false_type {};
template <class T>
struct is_optional<std::optional<T>> : std::true_type {};
template <class T>
struct is_variant : std::false_type {};
template <class... T>
struct is_variant<std::variant<T...>> : std::true_type {};
template <class T>
struct is_duration : std::false_type {};
template <class R, class P>
struct is_duration<std::chrono::duration<R, P>> : std::true_type {};
template <class T, class = void>
struct has_empty : std::false_type {};
template <class T>
struct has_empty<T, std::void_t<decltype(std::declval<const T&>().empty())>> : std::true_type {};
template <class T, class = void>
struct has_insert_or_assign : std::false_type {};
template <class T>
struct has_insert_or_assign<
    T, std::void_t<decltype(std::declval<T&>().insert_or_assign(std::declval<const std::string&>(),
                                                                std::declval<typename T::mapped_type>()))>>
    : std::true_type {};

template <class T>
bool truthy(const T& value) {
  if constexpr (std::is_arithmetic_v<T>)
    return value != 0;
  else if constexpr (is_duration<T>::value)
    return value.count() != 0;
  else if constexpr (is_optional<T>::value)
    return value.has_value() && truthy(*value);
  else if constexpr (is_variant<T>::value)
    return std::visit([](const auto& v) { return truthy(v); }, value);
  else if constexpr (std::is_constructible_v<bool, const T&>)
    return static_cast<bool>(value);
  else if constexpr (has_empty<T>::value)
    return !value.empty();
  else
    return true;
}

/// Hand a parsed value to a sink: store through a pointer, or call it.
template <class Sink, class V>
void deliver(Sink& sink, V&& value) {
  if constexpr (std::is_pointer_v<Sink>)
    *sink = std::forward<V>(value);
  else
    std::invoke(sink, std::forward<V>(value));
}

/// Hand a DictOf member's value to a sink: a map or vector of pairs through a pointer, or a call.
template <class Sink, class V>
void deliver_member(Sink& sink, const std::string& member, V&& value) {
  if constexpr (std::is_pointer_v<Sink>) {
    if constexpr (has_insert_or_assign<std::remove_pointer_t<Sink>>::value)
      sink->insert_or_assign(member, std::forward<V>(value));
    else
      sink->emplace_back(member, std::forward<V>(value));
  } else {
    std::invoke(sink, member, std::forward<V>(value));
  }
}

/// A spec item: parses what it describes at a key path of a raw configuration.
struct spec_node {
  virtual ~spec_node() = default;
  /// baseplate.py's Parser.parse(key_path, raw_config).
  virtual void parse(const std::string& key_path, const flat_config& raw) const = 0;
};

}  // namespace detail

// --------------------------------------------------------------------------
// Scalar parsers
// --------------------------------------------------------------------------

/// The raw text; an empty value is an error ("no value specified").
inline std::string String(const std::string& text) {
  if (text.empty()) throw std::invalid_argument("no value specified");
  return text;
}

/// A parser of integers written in a given base, as Python's int(text, base).
struct integer_parser {
  /// 2 to 36, or 0 to infer it from a 0x/0o/0b prefix; others fail when parsing, as in Python.
  int base = 10;
  /// Parse `text`; std::invalid_argument for bad syntax, std::overflow_error beyond std::int64_t.
  std::int64_t operator()(const std::string& text) const {
    return detail::to_int64(detail::parse_int_literal(text, base), text);
  }
};

/// Integer(base=N): a parser of integers in base `base` ("1f" and "0x1F" in base 16).
inline integer_parser integer(int base) { return integer_parser{base}; }

/// A base-10 integer as Python's int(): sign, surrounding whitespace and "1_000" allowed.
inline std::int64_t Integer(const std::string& text) { return integer_parser{10}(text); }

/// A floating-point number as Python's float() ("1e3", "-0", "inf", "nan", "1_0.5").
inline double Float(const std::string& text) {
  const auto fail = [&]() -> double {
    throw std::invalid_argument("could not convert string to float: " + detail::py_repr(text));
  };
  std::string s = text;
  if (s.find('_') != std::string::npos) {  // only single underscores between digits
    std::string kept;
    char prev = '\0';
    for (const char c : s) {
      const bool digit = c >= '0' && c <= '9';
      if (c == '_') {
        if (!(prev >= '0' && prev <= '9')) fail();
      } else {
        if (prev == '_' && !digit) fail();
        kept += c;
      }
      prev = c;
    }
    if (prev == '_') fail();
    s = kept;
  }
  std::size_t i = 0, e = s.size();
  while (i < e && detail::py_isspace(s[i])) ++i;
  while (e > i && detail::py_isspace(s[e - 1])) --e;
  if (i == e) return fail();
  bool negative = false;
  if (s[i] == '+' || s[i] == '-') negative = s[i++] == '-';
  std::string rest = s.substr(i, e - i);
  for (char& c : rest) c = static_cast<char>(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
  if (rest == "inf" || rest == "infinity") return negative ? -HUGE_VAL : HUGE_VAL;
  if (rest == "nan") return std::nan("");
  std::string digits;
  std::size_t fraction_digits = 0;
  while (i < e && s[i] >= '0' && s[i] <= '9') digits += s[i++];
  if (i < e && s[i] == '.') {
    ++i;
    while (i < e && s[i] >= '0' && s[i] <= '9') digits += s[i++], ++fraction_digits;
  }
  if (digits.empty()) return fail();
  long long exponent = 0;
  if (i < e && (s[i] == 'e' || s[i] == 'E')) {
    std::size_t j = i + 1;
    bool negative_exponent = false;
    if (j < e && (s[j] == '+' || s[j] == '-')) negative_exponent = s[j++] == '-';
    if (j < e && s[j] >= '0' && s[j] <= '9') {
      while (j < e && s[j] >= '0' && s[j] <= '9') {
        if (exponent < 1'000'000'000) exponent = exponent * 10 + (s[j] - '0');
        ++j;
      }
      if (negative_exponent) exponent = -exponent;
      i = j;
    }
  }
  if (i != e) return fail();
  // Without a decimal point, strtod's result does not depend on the locale.
  const std::string normalized = (negative ? "-" : "") + digits + "e" +
                                 std::to_string(exponent - static_cast<long long>(fraction_digits));
  return std::strtod(normalized.c_str(), nullptr);
}

/// True for "true" and false for "false", in any case; anything else is an error.
inline bool Boolean(const std::string& text) {
  std::string lower = text;
  for (char& c : lower) c = static_cast<char>(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
  if (lower == "true") return true;
  if (lower == "false") return false;
  throw std::invalid_argument("expected one of dict_keys(['true', 'false'])");
}

/// A remote endpoint: a text containing '/' is a UNIX socket path, else "host:port" split at the first colon.
inline endpoint_configuration Endpoint(const std::string& text) {
  if (text.empty()) throw std::invalid_argument("no endpoint specified");
  endpoint_configuration endpoint;
  if (text.find('/') != std::string::npos) {
    endpoint.family = address_family::unix_domain;
    endpoint.unix_path = text;
    return endpoint;
  }
  const std::size_t colon = text.find(':');
  if (colon == std::string::npos) throw std::invalid_argument("no port specified");
  endpoint.inet.host = text.substr(0, colon);
  endpoint.inet.port = Integer(text.substr(colon + 1));
  return endpoint;
}

/// The bytes of base64 text, as Python's base64.b64decode (non-alphabet characters are skipped).
inline std::string Base64(const std::string& text) {
  if (text.empty()) throw std::invalid_argument("expected base64 encoded data");
  for (const char c : text)
    if (static_cast<unsigned char>(c) >= 0x80)
      throw std::invalid_argument("string argument should contain only ASCII characters");
  std::string out;
  int quad_pos = 0, pads = 0;
  unsigned leftchar = 0;
  for (const char c : text) {
    if (c == '=') {
      if (quad_pos >= 2 && quad_pos + ++pads >= 4) return out;  // complete padding ends the data
      continue;
    }
    unsigned v;
    if (c >= 'A' && c <= 'Z')
      v = static_cast<unsigned>(c - 'A');
    else if (c >= 'a' && c <= 'z')
      v = static_cast<unsigned>(c - 'a' + 26);
    else if (c >= '0' && c <= '9')
      v = static_cast<unsigned>(c - '0' + 52);
    else if (c == '+')
      v = 62;
    else if (c == '/')
      v = 63;
    else
      continue;
    pads = 0;
    switch (quad_pos) {
      case 0:
        leftchar = v;
        break;
      case 1:
        out += static_cast<char>((leftchar << 2) | (v >> 4));
        leftchar = v & 0x0f;
        break;
      case 2:
        out += static_cast<char>((leftchar << 4) | (v >> 2));
        leftchar = v & 0x03;
        break;
      default:
        out += static_cast<char>((leftchar << 6) | v);
        leftchar = 0;
        break;
    }
    quad_pos = (quad_pos + 1) % 4;
  }
  if (quad_pos == 1)
    throw std::invalid_argument("Invalid base64-encoded string: number of data characters (" +
                                std::to_string(out.size() / 3 * 4 + 1) +
                                ") cannot be 1 more than a multiple of 4");
  if (quad_pos != 0) throw std::invalid_argument("Incorrect padding");
  return out;
}

/// A span such as "3 days": a whole number and a unit (millisecond, second, minute, hour, day;
/// every trailing 's' of the unit is dropped), as datetime.timedelta would hold it.
inline std::chrono::microseconds Timespan(const std::string& text) {
  const std::vector<std::string> words = detail::py_split(text);
  if (words.size() != 2) throw std::invalid_argument("invalid specification");
  const detail::int_literal count = detail::parse_int_literal(words[0], 10);
  std::string unit = words[1];
  while (!unit.empty() && unit.back() == 's') unit.pop_back();
  if (unit == "millisecond") {  // count * 0.001 is a float in baseplate.py
    double value;
    if (count.overflow) {
      value = std::strtod(count.decimal_digits.c_str(), nullptr);
      if (std::isinf(value)) throw std::overflow_error("int too large to convert to float");
    } else {
      value = static_cast<double>(count.magnitude);
    }
    return detail::timedelta_from_seconds((count.negative ? -value : value) * 0.001);
  }
  std::int64_t factor;
  if (unit == "second")
    factor = 1;
  else if (unit == "minute")
    factor = 60;
  else if (unit == "hour")
    factor = 3600;
  else if (unit == "day")
    factor = 86400;
  else
    throw std::invalid_argument("unknown unit");
  if (count.overflow) throw std::overflow_error("Python int too large to convert to C int");
  const detail::int128 seconds = static_cast<detail::int128>(count.magnitude) * factor;
  return detail::timedelta_from_us((count.negative ? -seconds : seconds) * 1'000'000);
}

/// A Timespan, or else a plain number of seconds such as "1.5" (read with Float).
inline std::chrono::microseconds TimespanWithLegacyFallback(const std::string& text) {
  try {
    return Timespan(text);
  } catch (const std::invalid_argument&) {
  }
  return detail::timedelta_from_seconds(Float(text));
}

/// InfiniteTimespan for exactly "infinite", else a Timespan.
inline timespan_or_infinite TimespanOrInfinite(const std::string& text) {
  if (text == "infinite") return InfiniteTimespan;
  return Timespan(text);
}

/// A percentage such as "37.5%" as a fraction in [0, 1].
inline double Percent(const std::string& text) {
  if (text.empty() || text.back() != '%') throw std::invalid_argument("the value is not a percentage");
  const double fraction = Float(text.substr(0, text.size() - 1)) / 100.0;
  if (!(0 <= fraction && fraction <= 1)) throw std::invalid_argument("percentage is out of valid range");
  return fraction;
}

namespace detail {

/// UnixUser and UnixGroup: the id of a name in the user/group database, else a numeric id.
template <class Entry, class Lookup, class Id>
std::int64_t unix_account(const std::string& text, const char* function, Lookup lookup, Id id) {
  if (text.find('\0') != std::string::npos) throw std::invalid_argument("embedded null byte");
  Entry entry{};
  Entry* found = nullptr;
  std::vector<char> buffer(1024);
  while (lookup(text.c_str(), &entry, buffer.data(), buffer.size(), &found) == ERANGE && buffer.size() < (1u << 24))
    buffer.resize(buffer.size() * 2);
  if (found != nullptr) return static_cast<std::int64_t>(id(*found));
  try {
    return Integer(text);
  } catch (const std::invalid_argument&) {
    // str(ValueError(KeyError(message))) is repr(message).
    throw std::invalid_argument(py_repr(std::string(function) + ": name not found: " + py_repr(text)));
  }
}

}  // namespace detail

/// The user id of a user name, or a numeric user id ("1000").
inline std::int64_t UnixUser(const std::string& text) {
  return detail::unix_account<passwd>(text, "getpwnam()", ::getpwnam_r, [](const passwd& p) { return p.pw_uid; });
}

/// The group id of a group name, or a numeric group id.
inline std::int64_t UnixGroup(const std::string& text) {
  return detail::unix_account<group>(text, "getgrnam()", ::getgrnam_r, [](const group& g) { return g.gr_gid; });
}

// --------------------------------------------------------------------------
// Parser combinators
// --------------------------------------------------------------------------

/// A parser mapping each option name to its value (OneOf(hearts="H", ...)); names are case-sensitive.
/// A repeated name keeps its first position and takes the last value, as in a Python dict.
template <class T>
auto OneOf(std::vector<std::pair<std::string, T>> options) {
  std::vector<std::pair<std::string, T>> unique;
  for (auto& [name, value] : options) {
    auto same = [&name = name](const auto& option) { return option.first == name; };
    auto it = std::find_if(unique.begin(), unique.end(), same);
    if (it != unique.end())
      it->second = std::move(value);
    else
      unique.emplace_back(name, std::move(value));
  }
  std::string message = "expected one of dict_keys([";
  for (std::size_t k = 0; k < unique.size(); ++k) message += (k ? ", " : "") + detail::py_repr(unique[k].first);
  message += "])";
  return [unique = std::move(unique), message = std::move(message)](const std::string& text) -> T {
    for (const auto& [name, value] : unique)
      if (name == text) return value;
    throw std::invalid_argument(message);
  };
}

/// A parser of comma-separated items: stripped, empty ones dropped, the rest parsed by `item`
/// into a std::vector; an empty value is an error (wrap in Optional to allow it).
template <class Parser>
auto TupleOf(Parser item) {
  return [item = std::move(item)](const std::string& text) {
    if (text.empty()) throw std::invalid_argument("no values provided");
    std::vector<detail::result_t<Parser>> values;
    std::size_t start = 0;
    for (;;) {
      const std::size_t comma = text.find(',', start);
      const std::string piece =
          detail::py_strip(std::string_view(text).substr(start, comma == std::string::npos ? comma : comma - start));
      if (!piece.empty()) values.push_back(std::invoke(item, piece));
      if (comma == std::string::npos) return values;
      start = comma + 1;
    }
  };
}

/// A parser yielding std::nullopt for an empty value, else `item`'s result.
template <class Parser>
auto Optional(Parser item) {
  return [item = std::move(item)](const std::string& text) -> std::optional<detail::result_t<Parser>> {
    if (text.empty()) return std::nullopt;
    return std::invoke(item, text);
  };
}

/// A parser yielding `fallback` (converted to `item`'s result type) for an empty value, else `item`'s result.
template <class Parser, class Default>
auto Optional(Parser item, Default fallback) {
  using R = detail::result_t<Parser>;
  return [item = std::move(item), value = R(std::move(fallback))](const std::string& text) -> R {
    if (text.empty()) return value;
    return std::invoke(item, text);
  };
}

/// A parser trying `primary`, then `secondary` if `primary` throws std::invalid_argument (a
/// ValueError); the result is their common type, or a std::variant<primary's, secondary's>.
template <class Primary, class Secondary>
auto Fallback(Primary primary, Secondary secondary) {
  using R1 = detail::result_t<Primary>;
  using R2 = detail::result_t<Secondary>;
  using R = std::conditional_t<std::is_same_v<R1, R2>, R1, std::variant<R1, R2>>;
  return [primary = std::move(primary), secondary = std::move(secondary)](const std::string& text) -> R {
    try {
      if constexpr (std::is_same_v<R1, R2>)
        return std::invoke(primary, text);
      else
        return R(std::in_place_index<0>, std::invoke(primary, text));
    } catch (const std::invalid_argument&) {
    }
    if constexpr (std::is_same_v<R1, R2>)
      return std::invoke(secondary, text);
    else
      return R(std::in_place_index<1>, std::invoke(secondary, text));
  };
}

/// A parser whose default comes from environment variable `env_var`, read (and parsed by `item`,
/// which may throw here) when this is called; if it is unset or empty, `fallback` is the default.
/// An empty value yields the default; a false result (no default, 0, "", an empty list, a zero
/// timespan, or a class type converting to false) is an error ("no value provided").
template <class Parser>
auto DefaultFromEnv(Parser item, const std::string& env_var,
                    std::optional<detail::result_t<Parser>> fallback = std::nullopt) {
  using R = detail::result_t<Parser>;
  const char* env = std::getenv(env_var.c_str());
  const std::string env_text = env != nullptr ? env : "";
  std::optional<R> value = env_text.empty() ? std::move(fallback) : std::optional<R>(std::invoke(item, env_text));
  return [item = std::move(item), value = std::move(value)](const std::string& text) -> R {
    if (text.empty()) {
      if (!value || !detail::truthy(*value)) throw std::invalid_argument("no value provided");
      return *value;
    }
    R result = std::invoke(item, text);
    if (!detail::truthy(result)) throw std::invalid_argument("no value provided");
    return result;
  };
}

// --------------------------------------------------------------------------
// Specs
// --------------------------------------------------------------------------

class spec;

namespace detail {
struct dict_of_node;
struct spec_node_list;
}  // namespace detail

/// One item of a spec: an option (a parser and its sink), a nested spec, or a DictOf group.
class spec_item {
 public:
  /// A nested spec as an item.
  spec_item(const spec& nested);  // implicit on purpose: specs nest in specs
  /// An item implemented by `node` (what option() and DictOf() build).
  explicit spec_item(std::shared_ptr<const detail::spec_node> node) : node_(std::move(node)) {}
  /// Parse this item at `key_path` ("" is the root), as baseplate.py's Parser.parse().
  void parse(const std::string& key_path, const raw_config& raw) const { parse(key_path, detail::flatten(raw)); }

 private:
  friend struct detail::dict_of_node;
  friend struct detail::spec_node_list;
  void parse(const std::string& key_path, const detail::flat_config& raw) const { node_->parse(key_path, raw); }
  std::shared_ptr<const detail::spec_node> node_;
};

namespace detail {

/// An option: the value at the key path, parsed; parser errors become configuration_error.
template <class Parser, class Sink>
struct option_node final : spec_node {
  option_node(Parser p, Sink s) : parser(std::move(p)), sink(std::move(s)) {}
  Parser parser;
  mutable Sink sink;
  void parse(const std::string& key_path, const flat_config& raw) const override {
    const std::string text = raw.get(key_path);
    std::optional<result_t<Parser>> value;
    try {
      value.emplace(std::invoke(parser, text));
    } catch (const std::exception& e) {
      throw configuration_error(key_path, e.what(), std::current_exception());
    }
    deliver(sink, std::move(*value));
  }
};

/// A DictOf group: every distinct member name found under the key path, in raw config order.
struct dict_of_node final : spec_node {
  explicit dict_of_node(std::function<spec_item(const std::string&)> m) : make(std::move(m)) {}
  std::function<spec_item(const std::string&)> make;
  void parse(const std::string& key_path, const flat_config& raw) const override {
    const std::string prefix = key_path.empty() ? std::string() : key_path + ".";
    std::set<std::string> done;
    for (const auto& option : raw.options) {
      const std::string& key = option.first;
      if (key.size() <= prefix.size() || key.compare(0, prefix.size(), prefix) != 0) continue;
      const std::size_t end = key.find('.', prefix.size());
      std::string member = key.substr(prefix.size(), end == std::string::npos ? end : end - prefix.size());
      if (member.empty() || done.count(member) != 0) continue;
      make(member).parse(prefix + member, raw);
      done.insert(std::move(member));
    }
  }
};

/// A nested spec: its items in order, each at `<key_path>.<name>`.
struct spec_node_list final : spec_node {
  explicit spec_node_list(std::vector<std::pair<std::string, spec_item>> i) : items(std::move(i)) {}
  std::vector<std::pair<std::string, spec_item>> items;
  void parse(const std::string& key_path, const flat_config& raw) const override {
    for (const auto& [name, item] : items) {
      if (name.find('.') != std::string::npos) throw std::logic_error("dots are not allowed in keys");
      item.parse(key_path.empty() ? name : key_path + "." + name, raw);
    }
  }
};

}  // namespace detail

/// An option item: parse the value with `parser`, then store it into `*sink` (a pointer) or call `sink(value)`.
template <class Parser, class Sink>
spec_item option(Parser parser, Sink sink) {
  return spec_item(std::make_shared<const detail::option_node<Parser, Sink>>(std::move(parser), std::move(sink)));
}

/// A group of options `<key>.<member>` / `<key>.<member>.<more>` whose member names are not known
/// in advance (DictOf): `make(member)` returns the item (a spec, an option or another DictOf) that
/// parses each member at `<key>.<member>`, in the order of the raw configuration.
template <class Make, std::enable_if_t<std::is_invocable_r_v<spec_item, Make&, const std::string&>, int> = 0>
spec_item DictOf(Make make) {
  return spec_item(std::make_shared<const detail::dict_of_node>(
      [make = std::move(make)](const std::string& member) mutable -> spec_item { return make(member); }));
}

/// DictOf(parser): each member is parsed by `parser`; `sink` is a pointer to a map or to a vector of
/// (member, value) pairs, or a callable taking (member, value).
template <class Parser, class Sink>
spec_item DictOf(Parser parser, Sink sink) {
  auto shared = std::make_shared<Sink>(std::move(sink));  // one sink for all members
  return DictOf([parser = std::move(parser), shared](const std::string& member) {
    return option(parser, [shared, member](detail::result_t<Parser> value) {
      detail::deliver_member(*shared, member, std::move(value));
    });
  });
}

/// A spec: option names mapped to items, parsed in the order they were added.
class spec {
 public:
  /// Add `name` (no dots) with an item: a nested spec, a DictOf group or an option().
  spec& add(std::string name, spec_item item) {
    items_.emplace_back(std::move(name), std::move(item));
    return *this;
  }
  /// Add option `name`, parsed by `parser`; the value is stored into `*sink` or passed to `sink(value)`.
  template <class Parser, class Sink>
  spec& add(std::string name, Parser parser, Sink sink) {
    return add(std::move(name), option(std::move(parser), std::move(sink)));
  }
  /// The items, in order.
  const std::vector<std::pair<std::string, spec_item>>& items() const noexcept { return items_; }

 private:
  std::vector<std::pair<std::string, spec_item>> items_;
};

inline spec_item::spec_item(const spec& nested)
    : node_(std::make_shared<const detail::spec_node_list>(nested.items())) {}

/// Parse `raw` against `item` (usually a spec) from the root, as baseplate.py's parse_config():
/// values go to the sinks; a parser's error is rethrown as configuration_error naming the option.
inline void parse_config(const raw_config& raw, const spec_item& item) { item.parse("", raw); }

}  // namespace baseplate::config
