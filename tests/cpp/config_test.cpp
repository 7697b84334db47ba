#include "baseplate/config.hpp"

#include <gtest/gtest.h>

// json_parser.hpp includes the deprecated boost/bind.hpp, which otherwise prints a note.
#define BOOST_BIND_GLOBAL_PLACEHOLDERS
#include <boost/property_tree/json_parser.hpp>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <iterator>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <utility>
#include <variant>
#include <vector>

// The vector table (tests/vectors/config_vectors.json, schema in
// tests/vectors/README.md) is the one the Python tests check; every vector
// whose parsers the C++ side mirrors is run here. The vectors skipped are
// exactly those listed in the top comment of baseplate/config.hpp, and
// ConfigVectors.SkipsAreExactlyTheDocumentedOnes holds the list to that.

namespace cfg = baseplate::config;
using boost::property_tree::ptree;

namespace {

// --------------------------------------------------------------------------
// The table, read with Boost.PropertyTree's JSON parser
// --------------------------------------------------------------------------

/// A JSON value with its type.
struct Json {
  enum class Kind { null, boolean, number, string, array, object };
  Kind kind = Kind::null;
  /// The string, the number as written, or "true"/"false".
  std::string text;
  /// Array items (empty keys) or object members, in order.
  std::vector<std::pair<std::string, Json>> members;

  const Json* find(const std::string& key) const {
    for (const auto& [k, v] : members)
      if (k == key) return &v;
    return nullptr;
  }
  const Json& at(const std::string& key) const {
    if (const Json* j = find(key)) return *j;
    throw std::runtime_error("vector field missing: " + key);
  }
  bool has(const std::string& key) const { return find(key) != nullptr; }
};

namespace jp = boost::property_tree::json_parser;

/// ptree's JSON reader keeps no types (1, "1" and true all read as strings;
/// [], {} and "" as empty trees), while the table compares strictly. These
/// callbacks of the same parser prefix each value's data with its type:
/// z(null) b(bool) n(number) s(string) a(array) o(object).
class typed_callbacks : public jp::detail::standard_callbacks<ptree> {
  using base = jp::detail::standard_callbacks<ptree>;

 public:
  void on_null() {
    base::on_null();
    current_value() = "z";
  }
  void on_boolean(bool b) {
    base::on_boolean(b);
    current_value() = b ? "btrue" : "bfalse";
  }
  template <typename Range>
  void on_number(Range code_units) {
    base::on_number(code_units);
    current_value().insert(0, "n");
  }
  void on_begin_number() {
    base::on_begin_number();
    current_value() = "n";
  }
  void on_begin_string() {
    base::on_begin_string();
    if (!is_key()) current_value() = "s";
  }
  void on_begin_array() {
    base::on_begin_array();
    current_value() = "a";
  }
  void on_begin_object() {
    base::on_begin_object();
    current_value() = "o";
  }
};

Json to_json(const ptree& tree) {
  Json j;
  const std::string& data = tree.data();
  if (data.empty()) throw std::runtime_error("untyped JSON value");
  j.text = data.substr(1);
  switch (data[0]) {
    case 'z': j.kind = Json::Kind::null; break;
    case 'b': j.kind = Json::Kind::boolean; break;
    case 'n': j.kind = Json::Kind::number; break;
    case 's': j.kind = Json::Kind::string; break;
    case 'a': j.kind = Json::Kind::array; break;
    case 'o': j.kind = Json::Kind::object; break;
    default: throw std::runtime_error("bad JSON type tag");
  }
  for (const auto& [key, child] : tree) j.members.emplace_back(key, to_json(child));
  return j;
}

const Json& table() {
  static const Json vectors = [] {
    const std::string path = BPS_VECTORS_PATH;
    std::ifstream in(path, std::ios::binary);
    if (!in) throw std::runtime_error("cannot open " + path);
    const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    typed_callbacks callbacks;
    jp::detail::encoding<char> encoding;
    jp::detail::read_json_internal(text.begin(), text.end(), encoding, callbacks, path);
    return to_json(callbacks.output());
  }();
  return vectors;
}

// --------------------------------------------------------------------------
// Values in the table's value encoding
// --------------------------------------------------------------------------

struct Bytes {
  std::string data;
};
struct Value;
using List = std::vector<Value>;
using Object = std::vector<std::pair<std::string, Value>>;

/// A parsed value (the Python object a vector's "ok" encodes).
struct Value {
  std::variant<std::monostate, bool, std::int64_t, double, std::string, Bytes, std::chrono::microseconds,
               cfg::infinite_timespan_t, cfg::endpoint_configuration, List, Object>
      v;

  /// Python's truthiness (DefaultFromEnv relies on it).
  explicit operator bool() const {
    return std::visit(
        [](const auto& x) -> bool {
          using T = std::decay_t<decltype(x)>;
          if constexpr (std::is_same_v<T, std::monostate>)
            return false;
          else if constexpr (std::is_arithmetic_v<T>)
            return x != 0;
          else if constexpr (std::is_same_v<T, std::chrono::microseconds>)
            return x.count() != 0;
          else if constexpr (std::is_same_v<T, Bytes>)
            return !x.data.empty();
          else if constexpr (std::is_same_v<T, std::string> || std::is_same_v<T, List> || std::is_same_v<T, Object>)
            return !x.empty();
          else
            return true;
        },
        v);
  }
};

template <class T>
Value make(T x) {
  Value value;
  value.v.template emplace<T>(std::move(x));
  return value;
}

/// Strict equality: 1, 1.0 and true differ, and so do 0.0 and -0.0; nan equals nan.
bool same(const Value& a, const Value& b) {
  if (a.v.index() != b.v.index()) return false;
  return std::visit(
      [&](const auto& x) -> bool {
        using T = std::decay_t<decltype(x)>;
        const T& y = std::get<T>(b.v);
        if constexpr (std::is_same_v<T, std::monostate> || std::is_same_v<T, cfg::infinite_timespan_t>) {
          return true;
        } else if constexpr (std::is_same_v<T, double>) {
          if (std::isnan(x) || std::isnan(y)) return std::isnan(x) && std::isnan(y);
          return x == y && std::signbit(x) == std::signbit(y);
        } else if constexpr (std::is_same_v<T, Bytes>) {
          return x.data == y.data;
        } else if constexpr (std::is_same_v<T, List>) {
          if (x.size() != y.size()) return false;
          for (std::size_t i = 0; i < x.size(); ++i)
            if (!same(x[i], y[i])) return false;
          return true;
        } else if constexpr (std::is_same_v<T, Object>) {
          if (x.size() != y.size()) return false;
          for (std::size_t i = 0; i < x.size(); ++i)
            if (x[i].first != y[i].first || !same(x[i].second, y[i].second)) return false;
          return true;
        } else {
          return x == y;
        }
      },
      a.v);
}

std::string describe(const Value& value) {
  return std::visit(
      [](const auto& x) -> std::string {
        using T = std::decay_t<decltype(x)>;
        if constexpr (std::is_same_v<T, std::monostate>) {
          return "None";
        } else if constexpr (std::is_same_v<T, bool>) {
          return x ? "True" : "False";
        } else if constexpr (std::is_same_v<T, std::int64_t>) {
          return std::to_string(x);
        } else if constexpr (std::is_same_v<T, double>) {
          char buf[64];
          std::snprintf(buf, sizeof buf, "float(%.17g)", x);
          return buf;
        } else if constexpr (std::is_same_v<T, std::string>) {
          return cfg::detail::py_repr(x);
        } else if constexpr (std::is_same_v<T, Bytes>) {
          return "b" + cfg::detail::py_repr(x.data);
        } else if constexpr (std::is_same_v<T, std::chrono::microseconds>) {
          return "timedelta(microseconds=" + std::to_string(x.count()) + ")";
        } else if constexpr (std::is_same_v<T, cfg::infinite_timespan_t>) {
          return "InfiniteTimespan";
        } else if constexpr (std::is_same_v<T, cfg::endpoint_configuration>) {
          return std::string(x.family == cfg::address_family::inet ? "AF_INET " : "AF_UNIX ") + x.to_string();
        } else if constexpr (std::is_same_v<T, List>) {
          std::string out = "[";
          for (std::size_t i = 0; i < x.size(); ++i) out += (i ? ", " : "") + describe(x[i]);
          return out + "]";
        } else {
          std::string out = "{";
          for (std::size_t i = 0; i < x.size(); ++i)
            out += (i ? ", " : "") + cfg::detail::py_repr(x[i].first) + ": " + describe(x[i].second);
          return out + "}";
        }
      },
      value.v);
}

/// A vector the C++ side cannot express (a parser it does not have, an invalid spec, ...).
struct unsupported : std::runtime_error {
  using std::runtime_error::runtime_error;
};

std::int64_t to_int(const Json& j) {
  std::int64_t n = 0;
  const auto [end, ec] = std::from_chars(j.text.data(), j.text.data() + j.text.size(), n);
  if (ec != std::errc() || end != j.text.data() + j.text.size()) throw unsupported("integer beyond int64: " + j.text);
  return n;
}

/// Total microseconds of a $timedelta payload, if std::chrono::microseconds holds it.
std::optional<std::chrono::microseconds> timedelta_us(const Json& payload) {
  const cfg::detail::int128 us =
      (static_cast<cfg::detail::int128>(to_int(payload.at("days"))) * 86400 + to_int(payload.at("seconds"))) *
          1'000'000 +
      to_int(payload.at("microseconds"));
  if (us > INT64_MAX || us < INT64_MIN) return std::nullopt;
  return std::chrono::microseconds(static_cast<std::int64_t>(us));
}

/// The value a JSON value encodes (README "Value encoding").
Value decode(const Json& j) {
  switch (j.kind) {
    case Json::Kind::null: return Value{};
    case Json::Kind::boolean: return make<bool>(j.text == "true");
    case Json::Kind::number:
      if (j.text.find_first_of(".eE") != std::string::npos) return make<double>(std::strtod(j.text.c_str(), nullptr));
      return make<std::int64_t>(to_int(j));
    case Json::Kind::string: return make<std::string>(j.text);
    case Json::Kind::array: {
      List items;
      for (const auto& member : j.members) items.push_back(decode(member.second));
      return make<List>(std::move(items));
    }
    case Json::Kind::object: break;
  }
  if (j.members.size() == 1 && !j.members[0].first.empty() && j.members[0].first[0] == '$') {
    const std::string& tag = j.members[0].first;
    const Json& payload = j.members[0].second;
    if (tag == "$float") {
      if (payload.text == "nan") return make<double>(std::nan(""));
      return make<double>(payload.text == "inf" ? HUGE_VAL : -HUGE_VAL);
    }
    if (tag == "$timedelta") {
      const auto us = timedelta_us(payload);
      if (!us) throw unsupported("timedelta beyond std::chrono::microseconds");
      return make<std::chrono::microseconds>(*us);
    }
    if (tag == "$bytes") {
      Bytes bytes;
      for (std::size_t i = 0; i + 1 < payload.text.size(); i += 2)
        bytes.data += static_cast<char>(std::stoi(payload.text.substr(i, 2), nullptr, 16));
      return make<Bytes>(std::move(bytes));
    }
    if (tag == "$infinite") return make<cfg::infinite_timespan_t>(cfg::InfiniteTimespan);
    if (tag == "$endpoint") {
      cfg::endpoint_configuration endpoint;
      const Json& address = payload.at("address");
      if (payload.at("family").text == "AF_INET") {
        endpoint.inet = {address.at("host").text, to_int(address.at("port"))};
      } else {
        endpoint.family = cfg::address_family::unix_domain;
        endpoint.unix_path = address.text;
      }
      return make<cfg::endpoint_configuration>(std::move(endpoint));
    }
    throw unsupported("value tag " + tag);
  }
  Object members;
  for (const auto& [key, member] : j.members) members.emplace_back(key, decode(member));
  return make<Object>(std::move(members));
}

// --------------------------------------------------------------------------
// Parsers and specs built from vectors, with the SDK's parsers
// --------------------------------------------------------------------------

using DynParser = std::function<Value(const std::string&)>;

Value to_value(std::string v) { return make<std::string>(std::move(v)); }
Value to_value(std::int64_t v) { return make<std::int64_t>(v); }
Value to_value(double v) { return make<double>(v); }
Value to_value(bool v) { return make<bool>(v); }
Value to_value(std::chrono::microseconds v) { return make<std::chrono::microseconds>(v); }
Value to_value(cfg::endpoint_configuration v) { return make<cfg::endpoint_configuration>(std::move(v)); }
Value to_value(cfg::timespan_or_infinite v) {
  if (const auto* span = std::get_if<std::chrono::microseconds>(&v)) return to_value(*span);
  return make<cfg::infinite_timespan_t>(cfg::InfiniteTimespan);
}
Value to_value(std::vector<Value> v) { return make<List>(std::move(v)); }
Value to_value(std::optional<Value> v) { return v ? *v : Value{}; }

template <class Parser>
DynParser wrap(Parser parser) {
  return [parser](const std::string& text) { return to_value(parser(text)); };
}

const std::set<std::string> kPlainParsers = {
    "String",  "Float",   "Boolean",   "Endpoint",  "Timespan", "TimespanWithLegacyFallback", "TimespanOrInfinite",
    "Percent", "Base64", "UnixUser", "UnixGroup"};

DynParser build_parser(const Json& ref) {
  const std::string& name = ref.at("parser").text;
  static const Json no_args{Json::Kind::object, "", {}};
  const Json& args = ref.has("args") ? ref.at("args") : no_args;
  if (name == "String") return wrap(cfg::String);
  if (name == "Float") return wrap(cfg::Float);
  if (name == "Boolean") return wrap(cfg::Boolean);
  if (name == "Endpoint") return wrap(cfg::Endpoint);
  if (name == "Timespan") return wrap(cfg::Timespan);
  if (name == "TimespanWithLegacyFallback") return wrap(cfg::TimespanWithLegacyFallback);
  if (name == "TimespanOrInfinite") return wrap(cfg::TimespanOrInfinite);
  if (name == "Percent") return wrap(cfg::Percent);
  if (name == "UnixUser") return wrap(cfg::UnixUser);
  if (name == "UnixGroup") return wrap(cfg::UnixGroup);
  if (name == "Base64") return [](const std::string& text) { return make<Bytes>(Bytes{cfg::Base64(text)}); };
  if (name == "Integer") {
    if (args.has("base")) return wrap(cfg::integer(static_cast<int>(to_int(args.at("base")))));
    return wrap(cfg::Integer);
  }
  if (name == "OneOf") {
    std::vector<std::pair<std::string, Value>> options;
    for (const auto& [key, value] : args.at("options").members) options.emplace_back(key, decode(value));
    return cfg::OneOf<Value>(std::move(options));
  }
  if (name == "TupleOf") return wrap(cfg::TupleOf(build_parser(args.at("item"))));
  if (name == "Optional") {
    DynParser item = build_parser(args.at("item"));
    if (args.has("default")) return cfg::Optional(item, decode(args.at("default")));
    return wrap(cfg::Optional(item));
  }
  if (name == "Fallback") return cfg::Fallback(build_parser(args.at("primary")), build_parser(args.at("fallback")));
  if (name == "DefaultFromEnv") {
    DynParser item = build_parser(args.at("item"));
    const std::string& var = args.at("env_var").text;
    if (args.has("fallback")) return cfg::DefaultFromEnv(item, var, decode(args.at("fallback")));
    return cfg::DefaultFromEnv(item, var);
  }
  throw unsupported("parser " + name);
}

/// Where a spec item's result goes: a value, or an object of members in order.
struct Out {
  std::optional<Value> scalar;
  bool object = false;
  std::vector<std::pair<std::string, std::shared_ptr<Out>>> members;

  Value value() const {
    if (!object) return scalar ? *scalar : Value{};
    Object out;
    for (const auto& [key, member] : members) out.emplace_back(key, member->value());
    return make<Object>(std::move(out));
  }
};

bool has_literal(const Json& spec_node);

/// The spec item a spec node describes, its results going to `out`.
cfg::spec_item build_item(const Json& node, const std::shared_ptr<Out>& out) {
  if (const Json* children = node.find("spec")) {
    out->object = true;
    cfg::spec spec;
    for (const auto& [key, child] : children->members) {
      auto slot = std::make_shared<Out>();
      out->members.emplace_back(key, slot);
      spec.add(key, build_item(child, slot));
    }
    return spec;
  }
  if (node.has("literal")) throw unsupported("invalid spec item (literal)");
  if (node.at("parser").text == "DictOf") {
    const Json item = node.at("args").at("item");
    if (has_literal(item)) throw unsupported("invalid spec item (literal)");
    out->object = true;
    return cfg::DictOf([item, out](const std::string& member) {
      auto slot = std::make_shared<Out>();
      out->members.emplace_back(member, slot);
      return build_item(item, slot);
    });
  }
  return cfg::option(build_parser(node), [out](Value value) { out->scalar = std::move(value); });
}

// --------------------------------------------------------------------------
// Which vectors are skipped, and why
// --------------------------------------------------------------------------

/// Parsers the C++ side does not have (config.hpp, "Not mirrored").
const std::set<std::string> kUnmirroredParsers = {"File"};
/// Vector tags whose vectors the C++ side does not mirror (config.hpp, "Not mirrored").
const std::set<std::string> kUnmirroredTags = {"non-ascii", "bigint", "regex"};
/// Reasons of the two other documented skips.
const std::string kInvalidSpec = "invalid spec (literal)";
const std::string kTimespanRange = "timespan beyond std::chrono::microseconds";

void walk_spec(const Json& node, std::set<std::string>& parsers, bool& literal);

/// Every parser a parser reference uses (README "Parsers"), and whether a spec in it holds a literal.
void walk_ref(const Json& ref, std::set<std::string>& parsers, bool& literal) {
  const std::string& name = ref.at("parser").text;
  parsers.insert(name);
  const Json* args = ref.find("args");
  if (args == nullptr) return;
  if (name == "TupleOf" || name == "Optional" || name == "DefaultFromEnv") walk_ref(args->at("item"), parsers, literal);
  if (name == "Fallback") {
    walk_ref(args->at("primary"), parsers, literal);
    walk_ref(args->at("fallback"), parsers, literal);
  }
  if (name == "DictOf") walk_spec(args->at("item"), parsers, literal);
  if (name == "parse_config" || name == "Parser.parse") walk_spec(args->at("spec"), parsers, literal);
}

void walk_spec(const Json& node, std::set<std::string>& parsers, bool& literal) {
  if (const Json* children = node.find("spec")) {
    for (const auto& member : children->members) walk_spec(member.second, parsers, literal);
  } else if (node.has("literal")) {
    literal = true;
  } else {
    walk_ref(node, parsers, literal);
  }
}

bool has_literal(const Json& spec_node) {
  std::set<std::string> parsers;
  bool literal = false;
  walk_spec(spec_node, parsers, literal);
  return literal;
}

bool timespan_out_of_range(const Json& value) {
  if (value.kind != Json::Kind::object && value.kind != Json::Kind::array) return false;
  if (value.members.size() == 1 && value.members[0].first == "$timedelta")
    return !timedelta_us(value.members[0].second).has_value();
  for (const auto& member : value.members)
    if (timespan_out_of_range(member.second)) return true;
  return false;
}

/// Why the C++ side does not check a vector; empty when it does.
std::vector<std::string> skip_reasons(const Json& vector) {
  std::vector<std::string> reasons;
  if (const Json* tags = vector.find("tags"))
    for (const auto& tag : tags->members)
      if (kUnmirroredTags.count(tag.second.text) != 0) reasons.push_back("tag " + tag.second.text);
  std::set<std::string> parsers;
  bool literal = false;
  walk_ref(vector, parsers, literal);
  for (const auto& parser : parsers)
    if (kUnmirroredParsers.count(parser) != 0) reasons.push_back("parser " + parser);
  if (literal) reasons.push_back(kInvalidSpec);
  if (vector.has("ok") && timespan_out_of_range(vector.at("ok"))) reasons.push_back(kTimespanRange);
  return reasons;
}

// --------------------------------------------------------------------------
// Running a vector
// --------------------------------------------------------------------------

/// The vector table's name of an exception's type.
std::string type_name(const std::exception_ptr& error) {
  try {
    std::rethrow_exception(error);
  } catch (const cfg::configuration_error&) {
    return "ConfigurationError";
  } catch (const std::invalid_argument&) {
    return "ValueError";
  } catch (const std::overflow_error&) {
    return "OverflowError";
  } catch (const std::logic_error&) {
    return "AssertionError";
  } catch (const unsupported& e) {
    return std::string("unsupported (") + e.what() + ")";
  } catch (const std::exception& e) {
    return std::string("unexpected C++ exception: ") + e.what();
  } catch (...) {
    return "unknown exception";
  }
}

/// The C++ type a vector's error_type maps to (binascii.Error is a ValueError).
std::string expected_type(const std::string& python_type) {
  return python_type == "binascii.Error" ? "ValueError" : python_type;
}

struct Outcome {
  bool ok = false;
  Value value;
  std::string stage;
  std::string error, error_type, error_key, error_cause, error_cause_type;
};

Outcome failed(const std::string& stage) {
  Outcome outcome;
  outcome.stage = stage;
  const std::exception_ptr error = std::current_exception();
  outcome.error_type = type_name(error);
  try {
    std::rethrow_exception(error);
  } catch (const cfg::configuration_error& e) {
    outcome.error = e.what();
    outcome.error_key = e.key();
    outcome.error_cause = e.error();
    outcome.error_cause_type = e.cause() ? type_name(e.cause()) : "none";
  } catch (const std::exception& e) {
    outcome.error = e.what();
  } catch (...) {
  }
  return outcome;
}

/// Sets a vector's environment variables and restores them afterwards.
class scoped_env {
 public:
  explicit scoped_env(const Json& vector) {
    const Json* env = vector.find("env");
    if (env == nullptr) return;
    for (const auto& [name, value] : env->members) {
      const char* old = std::getenv(name.c_str());
      saved_.emplace_back(name, old ? std::optional<std::string>(old) : std::nullopt);
      if (value.kind == Json::Kind::null)
        ::unsetenv(name.c_str());
      else
        ::setenv(name.c_str(), value.text.c_str(), 1);
    }
  }
  ~scoped_env() {
    for (const auto& [name, value] : saved_) {
      if (value)
        ::setenv(name.c_str(), value->c_str(), 1);
      else
        ::unsetenv(name.c_str());
    }
  }
  scoped_env(const scoped_env&) = delete;
  scoped_env& operator=(const scoped_env&) = delete;

 private:
  std::vector<std::pair<std::string, std::optional<std::string>>> saved_;
};

/// The two ways a raw configuration spells option names (config.hpp, "The raw configuration").
enum class raw_form {
  paths,       // put("a.b", v): nodes a > b, as the server builds it
  dotted_keys  // push_back({"a.b", ptree(v)}): one child named "a.b"
};

/// Build the vector's parser ("construct"), then run it on the input ("parse").
Outcome run(const Json& vector, raw_form form = raw_form::paths) {
  scoped_env env(vector);
  std::function<Value()> call;
  try {
    const std::string& name = vector.at("parser").text;
    const Json& input = vector.at("input");
    if (name == "parse_config" || name == "Parser.parse") {
      const Json& args = vector.at("args");
      auto root = std::make_shared<Out>();
      cfg::spec_item item = build_item(args.at("spec"), root);
      cfg::raw_config raw;
      for (const auto& [key, value] : input.members) {
        if (form == raw_form::paths)
          cfg::set_option(raw, key, value.text);
        else
          raw.push_back({key, ptree(value.text)});
      }
      if (name == "parse_config") {
        call = [root, item, raw] {
          cfg::parse_config(raw, item);
          return root->value();
        };
      } else {
        const std::string key_path = args.at("key_path").text;
        call = [root, item, raw, key_path] {
          item.parse(key_path, raw);
          return root->value();
        };
      }
    } else {
      DynParser parser = build_parser(vector);
      call = [parser, text = input.text] { return parser(text); };
    }
  } catch (...) {
    return failed("construct");
  }
  try {
    Outcome outcome;
    outcome.value = call();
    outcome.ok = true;
    return outcome;
  } catch (...) {
    return failed("parse");
  }
}

std::string describe(const Outcome& outcome) {
  if (outcome.ok) return "ok " + describe(outcome.value);
  std::string out = outcome.error_type + " while " + (outcome.stage == "construct" ? "building" : "parsing") + ": " +
                    cfg::detail::py_repr(outcome.error);
  if (outcome.error_type == "ConfigurationError")
    out += " [key " + cfg::detail::py_repr(outcome.error_key) + ", cause " + outcome.error_cause_type + " " +
           cfg::detail::py_repr(outcome.error_cause) + "]";
  return out;
}

/// "" when the C++ outcome is the vector's, else what differs.
std::string mismatch(const Json& vector, const Outcome& got) {
  if (vector.has("ok")) {
    const Value expected = decode(vector.at("ok"));
    if (got.ok && same(expected, got.value)) return "";
    return "expected ok " + describe(expected) + ", got " + describe(got);
  }
  Outcome expected;
  expected.stage = vector.has("error_stage") ? vector.at("error_stage").text : "parse";
  expected.error = vector.at("error").text;
  expected.error_type = expected_type(vector.at("error_type").text);
  if (expected.error_type == "ConfigurationError") {
    expected.error_key = vector.at("error_key").text;
    expected.error_cause = vector.at("error_cause").text;
    expected.error_cause_type = expected_type(vector.at("error_cause_type").text);
  }
  if (!got.ok && got.stage == expected.stage && got.error == expected.error && got.error_type == expected.error_type &&
      got.error_key == expected.error_key && got.error_cause == expected.error_cause &&
      got.error_cause_type == expected.error_cause_type)
    return "";
  return "expected " + describe(expected) + ", got " + describe(got);
}

/// mismatch() of the vector's outcome; a raw configuration is tried in both forms.
std::string check(const Json& vector) {
  std::string problem = mismatch(vector, run(vector, raw_form::paths));
  const std::string& name = vector.at("parser").text;
  if (problem.empty() && (name == "parse_config" || name == "Parser.parse")) {
    problem = mismatch(vector, run(vector, raw_form::dotted_keys));
    if (!problem.empty()) problem = "with dotted keys, " + problem;
  }
  return problem;
}

/// How many vectors the C++ side checks; the table has 1457 and skips 117 (see the test below).
constexpr std::size_t kCheckedVectors = 1340;

}  // namespace

// --------------------------------------------------------------------------
// The vector table
// --------------------------------------------------------------------------

TEST(ConfigVectors, EveryMirroredVectorMatches) {
  const Json& vectors = table();
  std::size_t checked = 0;
  for (std::size_t i = 0; i < vectors.members.size(); ++i) {
    const Json& vector = vectors.members[i].second;
    if (!skip_reasons(vector).empty()) continue;
    ++checked;
    const std::string problem = check(vector);
    EXPECT_TRUE(problem.empty()) << "vector #" << i << " (" << vector.at("id").text << ", input "
                                 << (vector.at("input").kind == Json::Kind::string
                                         ? cfg::detail::py_repr(vector.at("input").text)
                                         : std::string("a raw configuration"))
                                 << "): " << problem;
  }
  EXPECT_GE(checked, kCheckedVectors);
}

TEST(ConfigVectors, SkipsAreExactlyTheDocumentedOnes) {
  const Json& vectors = table();
  // The documented reasons, each with the number of vectors it covers in the
  // current table (a vector may have several); a new vector that the C++
  // side would skip changes these counts and must be looked at.
  const std::map<std::string, std::size_t> expected = {
      {"tag non-ascii", 70}, {"tag bigint", 11}, {"tag regex", 4},
      {"parser File", 18},   {kInvalidSpec, 12}, {kTimespanRange, 2},
  };
  std::map<std::string, std::size_t> counts;
  std::map<std::string, std::size_t> diverging;  // skipped vectors the C++ side answers differently
  std::size_t skipped = 0;
  for (std::size_t i = 0; i < vectors.members.size(); ++i) {
    const Json& vector = vectors.members[i].second;
    const std::string id = vector.at("id").text;
    const std::vector<std::string> reasons = skip_reasons(vector);
    if (reasons.empty()) continue;
    ++skipped;
    for (const auto& reason : reasons) ++counts[reason];

    std::set<std::string> parsers;
    bool literal = false;
    walk_ref(vector, parsers, literal);
    const bool unmirrored_parser = std::any_of(parsers.begin(), parsers.end(),
                                               [](const std::string& p) { return kUnmirroredParsers.count(p) != 0; });
    const Outcome outcome = run(vector);
    const bool cannot_build = outcome.stage == "construct" && outcome.error_type.rfind("unsupported", 0) == 0;
    // A vector using a parser the SDK lacks, or an invalid spec, cannot even be built in C++...
    EXPECT_EQ(cannot_build, unmirrored_parser || literal) << "vector #" << i << " (" << id << ")";
    // ...and the others are skipped for a divergence that is real for some of them.
    if (!cannot_build) {
      bool differs = true;
      try {
        differs = !mismatch(vector, outcome).empty();
      } catch (const unsupported&) {  // an expected value C++ cannot hold (bigint, timespan range)
      }
      if (differs)
        for (const auto& reason : reasons) ++diverging[reason];
    }
  }
  EXPECT_EQ(counts, expected);
  EXPECT_EQ(skipped, vectors.members.size() - kCheckedVectors);
  for (const auto& [reason, count] : expected) {
    if (reason == "parser File" || reason == kInvalidSpec) continue;
    EXPECT_GT(diverging[reason], 0u) << "no vector needs skipping for " << reason;
  }
  // The File parser is exactly the `filesystem` tag.
  for (const auto& member : vectors.members) {
    const Json& vector = member.second;
    std::set<std::string> parsers;
    bool literal = false;
    walk_ref(vector, parsers, literal);
    bool filesystem = false;
    if (const Json* tags = vector.find("tags"))
      for (const auto& tag : tags->members) filesystem = filesystem || tag.second.text == "filesystem";
    EXPECT_EQ(parsers.count("File") != 0, filesystem) << vector.at("id").text;
  }
}

// --------------------------------------------------------------------------
// parse_config and specs
// --------------------------------------------------------------------------

namespace {

cfg::raw_config raw_of(const std::vector<std::pair<std::string, std::string>>& options) {
  cfg::raw_config raw;
  for (const auto& [key, value] : options) cfg::set_option(raw, key, value);
  return raw;
}

/// The configuration_error parse_config throws for `item`, checked to be one.
cfg::configuration_error error_of(const cfg::raw_config& raw, const cfg::spec_item& item) {
  try {
    cfg::parse_config(raw, item);
  } catch (const cfg::configuration_error& e) {
    return e;
  }
  ADD_FAILURE() << "no configuration_error";
  return cfg::configuration_error("", "");
}

enum class suit { clubs, hearts };

struct country {
  std::int64_t population = 0;
  std::string capital;
};

}  // namespace

TEST(ParseConfig, NestedSpecsFillAStruct) {
  const cfg::raw_config raw = raw_of({
      {"simple", "true"},
      {"cards", "clubs, hearts"},
      {"nested.once", "1"},
      {"nested.really.deep", "3 seconds"},
      {"optional", ""},
      {"sample_rate", "37.5%"},
      {"interval", "30"},
      {"upstream", "localhost:9090"},
      {"unused", "x"},
  });
  struct {
    bool simple = false;
    std::vector<suit> cards;
    std::int64_t once = 0;
    std::chrono::microseconds deep{};
    std::int64_t optional = 0;
    std::optional<std::int64_t> absent = 42;
    double sample_rate = 0;
    std::variant<std::chrono::microseconds, std::int64_t> interval;
    cfg::endpoint_configuration upstream;
  } s;
  std::vector<std::string> order;
  cfg::parse_config(raw, cfg::spec()
                             .add("simple", cfg::Boolean, &s.simple)
                             .add("cards",
                                  cfg::TupleOf(cfg::OneOf<suit>({{"clubs", suit::clubs}, {"hearts", suit::hearts}})),
                                  &s.cards)
                             .add("nested", cfg::spec()
                                                .add("once", cfg::Integer, &s.once)
                                                .add("really", cfg::spec().add("deep", cfg::Timespan, &s.deep)))
                             .add("optional", cfg::Optional(cfg::Integer, 9001), &s.optional)
                             .add("absent", cfg::Optional(cfg::Integer), &s.absent)
                             .add("sample_rate", cfg::Percent,
                                  [&](double v) {
                                    order.push_back("sample_rate");
                                    s.sample_rate = v;
                                  })
                             .add("interval", cfg::Fallback(cfg::Timespan, cfg::Integer), &s.interval)
                             .add("upstream", cfg::Endpoint, &s.upstream));
  EXPECT_TRUE(s.simple);
  EXPECT_EQ(s.cards, (std::vector<suit>{suit::clubs, suit::hearts}));
  EXPECT_EQ(s.once, 1);
  EXPECT_EQ(s.deep, std::chrono::seconds(3));
  EXPECT_EQ(s.optional, 9001);
  EXPECT_EQ(s.absent, std::nullopt);
  EXPECT_EQ(s.sample_rate, 0.375);
  EXPECT_EQ(order, std::vector<std::string>{"sample_rate"});
  ASSERT_TRUE(std::holds_alternative<std::int64_t>(s.interval));
  EXPECT_EQ(std::get<std::int64_t>(s.interval), 30);
  EXPECT_EQ(s.upstream.family, cfg::address_family::inet);
  EXPECT_EQ(s.upstream.inet, (cfg::internet_address{"localhost", 9090}));
  EXPECT_EQ(s.upstream.to_string(), "localhost:9090");
}

TEST(ParseConfig, OptionNamesAsPathsOrDottedKeys) {
  // The server's form: put() splits names at their dots, and ptree's own getters work.
  cfg::raw_config paths;
  cfg::set_option(paths, "noodles.count", "3");
  paths.put("noodles.flavor", "miso");
  cfg::set_option(paths, "noodles.spicy", "false");
  cfg::set_option(paths, "noodles.spicy", "true");  // replaces
  EXPECT_EQ(paths.get<int>("noodles.count"), 3);
  EXPECT_EQ(paths.size(), 1u);  // one child, "noodles"

  // Dotted keys, as read_ini() and push_back() make them, and a mix of both.
  cfg::raw_config dotted;
  dotted.push_back({"noodles.count", ptree("3")});
  dotted.put(ptree::path_type("noodles.flavor", '\0'), "miso");
  dotted.push_back({"noodles", ptree()});
  dotted.back().second.push_back({"spicy", ptree("false")});
  dotted.push_back({"noodles.spicy", ptree("true")});  // same name, later: wins, as in a dict
  EXPECT_EQ(dotted.size(), 4u);

  for (const cfg::raw_config* raw : {&paths, &dotted}) {
    EXPECT_EQ(cfg::get_option(*raw, "noodles.count"), "3");
    EXPECT_EQ(cfg::get_option(*raw, "noodles"), "");  // leads to options, is none
    EXPECT_EQ(cfg::get_option(*raw, "missing"), "");
    std::int64_t count = 0;
    std::string flavor;
    bool spicy = false;
    std::vector<std::pair<std::string, std::string>> members;
    cfg::parse_config(*raw, cfg::spec()
                                .add("noodles", cfg::spec()
                                                    .add("count", cfg::Integer, &count)
                                                    .add("flavor", cfg::String, &flavor)
                                                    .add("spicy", cfg::Boolean, &spicy))
                                .add("noodles", cfg::DictOf(cfg::String, &members)));
    EXPECT_EQ(count, 3);
    EXPECT_EQ(flavor, "miso");
    EXPECT_TRUE(spicy);
    EXPECT_EQ(members, (std::vector<std::pair<std::string, std::string>>{
                           {"count", "3"}, {"flavor", "miso"}, {"spicy", "true"}}));
  }

  // Odd names survive the split: empty segments, and "" (the root's data).
  const cfg::raw_config odd = raw_of({{"", "root"}, {"a.", "dot"}, {"foo..x", "3"}, {".foo", "4"}});
  EXPECT_EQ(cfg::get_option(odd, ""), "root");
  EXPECT_EQ(cfg::get_option(odd, "a."), "dot");
  EXPECT_EQ(cfg::get_option(odd, "foo..x"), "3");
  EXPECT_EQ(cfg::get_option(odd, ".foo"), "4");
  std::int64_t root = 0;
  cfg::parse_config(raw_of({{"", "5"}}), cfg::option(cfg::Integer, &root));  // a parser as the whole spec
  EXPECT_EQ(root, 5);
}

TEST(ParseConfig, DictOfGroups) {
  const cfg::raw_config raw = raw_of({
      {"population.us", "325165000"},
      {"population.cn", "1383890000"},
      {"countries.cn.population", "1383890000"},
      {"countries.cn.capital", "Beijing"},
      {"countries.in.population", "1317610000"},
      {"countries.in.capital", "New Delhi"},
      {"countries.in.ignored", "x"},
      {"a.x.p", "1"},
      {"a.x.q", "2"},
      {"a.y.p", "3"},
  });
  std::map<std::string, std::int64_t> by_name;
  std::vector<std::pair<std::string, std::int64_t>> in_order;
  std::vector<std::string> seen;
  std::map<std::string, country> countries;
  std::map<std::string, std::map<std::string, std::int64_t>> nested;
  cfg::parse_config(
      raw, cfg::spec()
               .add("population", cfg::DictOf(cfg::Integer, &by_name))
               .add("population", cfg::DictOf(cfg::Integer, &in_order))
               .add("population",
                    cfg::DictOf(cfg::String, [&](const std::string& m, std::string) { seen.push_back(m); }))
               .add("countries", cfg::DictOf([&](const std::string& member) {
                      country& c = countries[member];
                      return cfg::spec()
                          .add("population", cfg::Integer, &c.population)
                          .add("capital", cfg::String, &c.capital);
                    }))
               .add("a", cfg::DictOf([&](const std::string& member) {
                      return cfg::DictOf(cfg::Integer, &nested[member]);
                    })));
  EXPECT_EQ(by_name, (std::map<std::string, std::int64_t>{{"cn", 1383890000}, {"us", 325165000}}));
  EXPECT_EQ(in_order, (std::vector<std::pair<std::string, std::int64_t>>{{"us", 325165000}, {"cn", 1383890000}}));
  EXPECT_EQ(seen, (std::vector<std::string>{"us", "cn"}));
  ASSERT_EQ(countries.size(), 2u);
  EXPECT_EQ(countries["in"].capital, "New Delhi");
  EXPECT_EQ(countries["cn"].population, 1383890000);
  EXPECT_EQ(nested["x"], (std::map<std::string, std::int64_t>{{"p", 1}, {"q", 2}}));
  EXPECT_EQ(nested["y"], (std::map<std::string, std::int64_t>{{"p", 3}}));

  // A DictOf at the root groups every option by its first segment.
  std::vector<std::pair<std::string, std::optional<std::string>>> roots;
  cfg::parse_config(raw_of({{"simple", "oink"}, {"foo.bar", "33"}, {"foo.baz", "x"}}),
                    cfg::DictOf(cfg::Optional(cfg::String), &roots));
  EXPECT_EQ(roots, (std::vector<std::pair<std::string, std::optional<std::string>>>{{"simple", "oink"},
                                                                                     {"foo", std::nullopt}}));
}

TEST(ParseConfig, ErrorsNameTheFullKeyPath) {
  std::int64_t n = 0;
  std::string s;
  auto deep = cfg::spec().add("deep", cfg::spec().add("so", cfg::spec().add("deep", cfg::Integer, &n)));
  const auto error = error_of(raw_of({{"deep.so.deep", "very"}}), deep);
  EXPECT_EQ(error.key(), "deep.so.deep");
  EXPECT_EQ(error.error(), "invalid literal for int() with base 10: 'very'");
  EXPECT_STREQ(error.what(), "deep.so.deep: invalid literal for int() with base 10: 'very'");
  ASSERT_TRUE(error.cause());
  EXPECT_THROW(std::rethrow_exception(error.cause()), std::invalid_argument);

  const auto member = error_of(raw_of({{"countries.cn.capital", "Beijing"}, {"countries.xx.capital", "Nowhere"}}),
                               cfg::spec().add("countries", cfg::DictOf([&](const std::string&) {
                                 return cfg::spec().add("capital", cfg::String, &s).add("population", cfg::Integer, &n);
                               })));
  EXPECT_EQ(member.key(), "countries.cn.population");
  EXPECT_EQ(member.error(), "invalid literal for int() with base 10: ''");

  const auto overflow = error_of(raw_of({{"t", "1000000000 days"}}), cfg::spec().add("t", cfg::Timespan, [](auto) {}));
  EXPECT_EQ(overflow.key(), "t");
  EXPECT_THROW(std::rethrow_exception(overflow.cause()), std::overflow_error);

  // Parser.parse: an item parsed below a key path.
  try {
    const cfg::spec_item item = cfg::spec().add("a", cfg::spec().add("b", cfg::Integer, &n));
    item.parse("p.q", raw_of({{"p.q.a.b", "x"}}));
    ADD_FAILURE() << "no configuration_error";
  } catch (const cfg::configuration_error& e) {
    EXPECT_EQ(e.key(), "p.q.a.b");
  }

  // Dots in spec names are a programming error, reported when the name is reached.
  EXPECT_THROW(cfg::parse_config(raw_of({}), cfg::spec().add("foo.bar", cfg::Integer, &n)), std::logic_error);
}

// --------------------------------------------------------------------------
// What only C++ has: result types and limits
// --------------------------------------------------------------------------

TEST(ConfigParsers, CppTypesAndLimits) {
  // Integers are std::int64_t; beyond it is an overflow, not a ValueError.
  EXPECT_EQ(cfg::Integer("9223372036854775807"), INT64_MAX);
  EXPECT_EQ(cfg::Integer("-9223372036854775808"), INT64_MIN);
  EXPECT_THROW(cfg::Integer("9223372036854775808"), std::overflow_error);
  EXPECT_THROW(cfg::Endpoint("host:99999999999999999999"), std::overflow_error);
  EXPECT_EQ(cfg::integer(0)("0o17"), 15);

  // Timespans are std::chrono::microseconds, which ends before timedelta does.
  EXPECT_EQ(cfg::Timespan("106751991 days"), std::chrono::hours(24) * 106751991);
  EXPECT_THROW(cfg::Timespan("106751992 days"), std::overflow_error);
  EXPECT_EQ(cfg::TimespanWithLegacyFallback("0.0000015"), std::chrono::microseconds(2));
  EXPECT_TRUE(std::holds_alternative<cfg::infinite_timespan_t>(cfg::TimespanOrInfinite("infinite")));

  // Fallback of two types is a variant; of one type, that type.
  static_assert(std::is_same_v<decltype(cfg::Fallback(cfg::Percent, cfg::Float)("1")), double>);
  const auto either = cfg::Fallback(cfg::Integer, cfg::Boolean)("true");
  ASSERT_TRUE(std::holds_alternative<bool>(either));
  EXPECT_TRUE(std::get<bool>(either));
  EXPECT_THROW(cfg::Fallback(cfg::Timespan, cfg::Integer)("1000000000 days"), std::overflow_error);

  // DefaultFromEnv reads the variable when it is built.
  ::setenv("BPS_CONFIG_TEST_DEFAULT", "12", 1);
  const auto from_env = cfg::DefaultFromEnv(cfg::Integer, "BPS_CONFIG_TEST_DEFAULT");
  ::unsetenv("BPS_CONFIG_TEST_DEFAULT");
  EXPECT_EQ(from_env(""), 12);
  EXPECT_EQ(from_env("3"), 3);
  EXPECT_THROW(from_env("0"), std::invalid_argument);
  EXPECT_EQ(cfg::DefaultFromEnv(cfg::Timespan, "BPS_CONFIG_TEST_DEFAULT", std::chrono::seconds(5))(""),
            std::chrono::seconds(5));

  // Base64 gives bytes; UnixUser/UnixGroup ids.
  EXPECT_EQ(cfg::Base64("AP8="), std::string("\x00\xff", 2));
  EXPECT_EQ(cfg::UnixUser("root"), 0);
  EXPECT_EQ(cfg::UnixGroup("1000"), 1000);
}
