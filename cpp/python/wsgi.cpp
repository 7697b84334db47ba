#include "wsgi.hpp"

#include "dispatch.hpp"
#include "http/response_writer.hpp"

#include <boost/asio/error.hpp>
#include <boost/beast/http/error.hpp>
#include <pybind11/stl.h>

#include <sys/stat.h>

#include <array>
#include <charconv>
#include <cstdio>
#include <cstring>
#include <unordered_map>

namespace baseplate::python {
namespace {

using boost::system::error_code;

int hexval(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

std::string percent_decode(std::string_view in) {
  std::string out;
  out.reserve(in.size());
  for (std::size_t i = 0; i < in.size(); ++i) {
    if (in[i] == '%' && i + 2 < in.size()) {
      int h = hexval(in[i + 1]), l = hexval(in[i + 2]);
      if (h >= 0 && l >= 0) {
        out.push_back(static_cast<char>(h * 16 + l));
        i += 2;
        continue;
      }
    }
    out.push_back(in[i]);
  }
  return out;
}

/// (type, value, traceback) of a caught Python error, for logging's exc_info.
py::tuple exc_info(py::error_already_set& e) {
  py::object tb = e.trace() ? py::reinterpret_borrow<py::object>(e.trace()) : py::none();
  return py::make_tuple(e.type(), e.value(), tb);
}

/// A str made once and kept for the life of the process (interned, so its
/// hash is computed once). Leaked on purpose: no Python object may be
/// released after finalization.
PyObject* interned(const char* s) {
  PyObject* o = PyUnicode_InternFromString(s);
  if (!o) throw py::error_already_set();
  return o;
}

/// `getattr(o, name, None)` without raising and catching AttributeError
/// (which costs more than a hello-world request). New reference or NULL.
PyObject* optional_attr(PyObject* o, PyObject* name) {
  PyObject* out = nullptr;
#if PY_VERSION_HEX >= 0x030D0000
  if (PyObject_GetOptionalAttr(o, name, &out) < 0) throw py::error_already_set();
#else
  if (_PyObject_LookupAttr(o, name, &out) < 0) throw py::error_already_set();
#endif
  return out;
}

/// Raises OSError for a failed network operation.
[[noreturn]] void raise_io(const char* what, error_code ec) {
  std::string msg = std::string(what) + ": " + ec.message();
  PyErr_SetString(PyExc_OSError, msg.c_str());
  throw py::error_already_set();
}

}  // namespace

/// environ["wsgi.input"]: reads the request body from the network as the
/// app asks for it, so an upload of any size is never held whole.
class input_stream {
 public:
  input_stream(std::shared_ptr<http::exchange> ex, dispatcher& d) : ex_(std::move(ex)), d_(d) {}

  py::bytes read(Py_ssize_t size) {
    if (size < 0) {
      while (!eof_) fetch(0);
      return take(buf_.size());
    }
    while (static_cast<Py_ssize_t>(buf_.size()) < size && !eof_) fetch(static_cast<std::size_t>(size) - buf_.size());
    return take(std::min(buf_.size(), static_cast<std::size_t>(size)));
  }

  py::bytes readline(Py_ssize_t size) {
    std::size_t scanned = 0;
    for (;;) {
      auto nl = buf_.find('\n', scanned);
      if (nl != std::string::npos) {
        std::size_t n = nl + 1;
        if (size >= 0) n = std::min(n, static_cast<std::size_t>(size));
        return take(n);
      }
      if (size >= 0 && buf_.size() >= static_cast<std::size_t>(size)) return take(static_cast<std::size_t>(size));
      if (eof_) return take(buf_.size());
      scanned = buf_.size();
      fetch(0);
    }
  }

  py::list readlines(Py_ssize_t hint) {
    py::list out;
    Py_ssize_t total = 0;
    for (;;) {
      py::bytes line = readline(-1);
      Py_ssize_t n = PyBytes_GET_SIZE(line.ptr());
      if (n == 0) break;
      out.append(line);
      total += n;
      if (hint > 0 && total >= hint) break;
    }
    return out;
  }

  py::bytes next() {
    py::bytes line = readline(-1);
    if (PyBytes_GET_SIZE(line.ptr()) == 0) throw py::stop_iteration();
    return line;
  }

 private:
  void fetch(std::size_t want) {
    auto w = d_.make_waiter();
    ex_->read_body(want, [w](error_code ec, std::string_view data) { w->complete(ec, data); });
    if (auto ec = w->wait()) {
      if (ec == boost::beast::http::error::body_limit) body_limit_hit_ = true;
      raise_io("reading the request body", ec);
    }
    if (w->data().empty())
      eof_ = true;
    else
      buf_.append(w->data());
  }

  py::bytes take(std::size_t n) {
    py::bytes out(buf_.data(), n);
    buf_.erase(0, n);
    return out;
  }

  std::shared_ptr<http::exchange> ex_;
  dispatcher& d_;  ///< how this request waits for the network
  std::string buf_;
  bool eof_ = false;

 public:
  /// Set when the body went over max_body_size: the answer is then 413.
  bool body_limit_hit_ = false;
};

/// start_response and write() of one request, and the response state.
class responder {
 public:
  responder(std::shared_ptr<http::exchange> ex, dispatcher& d) : ex_(std::move(ex)), d_(d) {}

  void start_response(py::object status, py::object headers, py::object exc_info) {
    if (!exc_info.is_none()) {
      if (head_sent_) {
        // PEP 3333: too late to change the response; re-raise the app's error.
        py::tuple t = exc_info;
        py::object type = t[0], value = t[1], tb = t[2];
        PyErr_Restore(type.release().ptr(), value.release().ptr(), tb.release().ptr());
        throw py::error_already_set();
      }
    } else if (head_) {
      throw py::value_error("start_response called a second time without exc_info");
    }
    if (!PyUnicode_Check(status.ptr())) throw py::type_error("status must be a str");
    std::string st = latin1_bytes(status.ptr());
    if (st.size() < 4 || st[3] != ' ' || !isdigit(st[0]) || !isdigit(st[1]) || !isdigit(st[2]))
      throw py::value_error("status must look like '200 OK', got " + st);
    http::response_head h;
    h.status = static_cast<unsigned>((st[0] - '0') * 100 + (st[1] - '0') * 10 + (st[2] - '0'));
    h.reason = st.substr(4);
    if (auto e = http::check_field_value(*h.reason)) throw py::value_error("status: " + *e);
    if (!PyList_Check(headers.ptr())) throw py::type_error("headers must be a list");
    for (auto item : headers) {
      if (!PyTuple_Check(item.ptr()) || PyTuple_GET_SIZE(item.ptr()) != 2)
        throw py::type_error("each header must be a (name, value) tuple");
      PyObject* name = PyTuple_GET_ITEM(item.ptr(), 0);
      PyObject* value = PyTuple_GET_ITEM(item.ptr(), 1);
      if (!PyUnicode_Check(name) || !PyUnicode_Check(value)) throw py::type_error("header names and values must be str");
      h.headers.emplace_back(latin1_bytes(name), latin1_bytes(value));
      if (auto e = http::check_field_name(h.headers.back().first)) throw py::value_error(*e);
      if (auto e = http::check_field_value(h.headers.back().second)) throw py::value_error(*e);
    }
    h.fields_checked = true;  // checked above, where the app sees the error
    head_ = std::move(h);
  }

  /// The write() callable: sends at once and waits for the network.
  void write(const py::bytes& data) {
    if (!head_) throw py::value_error("write() before start_response");
    send_ref(data.ptr(), false);
  }

  /// Adds one body piece from the iterable: a list's small pieces are
  /// gathered and sent whole, anything else is sent from where it is.
  void add(PyObject* chunk) {
    check_item(chunk);
    Py_ssize_t n = PyBytes_GET_SIZE(chunk);
    if (n == 0) return;
    if (streaming_) return send_ref(chunk, false);
    pending_.append(PyBytes_AS_STRING(chunk), static_cast<std::size_t>(n));
  }

  /// A body item must be bytes, after start_response.
  void check_item(PyObject* chunk) const {
    if (!PyBytes_Check(chunk)) {
      PyErr_Format(PyExc_TypeError, "WSGI body items must be bytes, not %.100s", Py_TYPE(chunk)->tp_name);
      throw py::error_already_set();
    }
    if (!head_ && !head_sent_) throw py::value_error("the app returned body bytes before calling start_response");
  }

  /// Sends the bytes object `chunk` without copying it: the write refers to
  /// its buffer, and the caller, which holds a reference, waits until the
  /// write is done (GIL released). Memory stays bounded by what the app
  /// holds, whatever the body's size.
  void send_ref(PyObject* chunk, bool last) {
    if (client_gone_) raise_io("writing the response", boost::asio::error::connection_reset);
    http::response_part part;
    if (!head_sent_) {
      part.head = std::move(*head_);
      head_sent_ = true;
    }
    part.body_ref = std::string_view(PyBytes_AS_STRING(chunk), static_cast<std::size_t>(PyBytes_GET_SIZE(chunk)));
    part.last = last;
    auto w = d_.make_waiter();
    ex_->write(std::move(part), [w](error_code ec) { w->complete(ec); });
    if (auto ec = w->wait()) {
      client_gone_ = true;
      raise_io("writing the response", ec);
    }
  }

  /// A list or tuple body: sent whole in one write when small, else item by
  /// item from where the items are, under a Content-Length of the total
  /// (unless the app set one). Item types are checked before anything goes out.
  void send_sequence(PyObject* seq) {
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    std::uint64_t total = 0;
    for (Py_ssize_t i = 0; i < n; ++i) {
      PyObject* item = PySequence_Fast_GET_ITEM(seq, i);
      check_item(item);
      total += static_cast<std::uint64_t>(PyBytes_GET_SIZE(item));
    }
    if (total <= copy_limit) {
      for (Py_ssize_t i = 0; i < n; ++i) add(PySequence_Fast_GET_ITEM(seq, i));
      return finish();
    }
    if (!head_) throw py::value_error("the app returned without calling start_response");
    bool has_length = false;
    for (auto& [name, value] : head_->headers) has_length = has_length || strcasecmp(name.c_str(), "content-length") == 0;
    if (!has_length) head_->headers.emplace_back("Content-Length", std::to_string(total));
    Py_ssize_t last = n - 1;
    while (last >= 0 && PyBytes_GET_SIZE(PySequence_Fast_GET_ITEM(seq, last)) == 0) --last;
    for (Py_ssize_t i = 0; i <= last; ++i) {
      PyObject* item = PySequence_Fast_GET_ITEM(seq, i);
      if (PyBytes_GET_SIZE(item) > 0) send_ref(item, i == last);
    }
  }

  /// List bodies up to this size are copied into one write: one system
  /// call, and the common small response never waits for the network.
  static constexpr std::uint64_t copy_limit = 256 * 1024;

  /// Finishes the response: head (if not yet sent) and what is pending.
  void finish() {
    if (!head_) throw py::value_error("the app returned without calling start_response");
    std::string body;
    body.swap(pending_);
    flush_body(std::move(body), true, false);
  }

  void set_streaming() { streaming_ = true; }
  bool head_set() const { return head_.has_value(); }
  bool head_sent() const { return head_sent_; }
  bool client_gone() const { return client_gone_; }
  http::response_head& head() { return *head_; }
  http::exchange& exchange() { return *ex_; }

  /// Sends `data`; waits for the network when `wait` (GIL released).
  void flush_body(std::string data, bool last, bool wait) {
    if (client_gone_) raise_io("writing the response", boost::asio::error::connection_reset);
    http::response_part part;
    if (!head_sent_) {
      part.head = std::move(*head_);  // sent once: the copy here is not needed again
      head_sent_ = true;
    }
    part.body = std::move(data);
    part.last = last;
    if (!wait) {
      ex_->write(std::move(part), nullptr);
      return;
    }
    auto w = d_.make_waiter();
    ex_->write(std::move(part), [w](error_code ec) { w->complete(ec); });
    if (auto ec = w->wait()) {
      client_gone_ = true;
      raise_io("writing the response", ec);
    }
  }

  /// Sends a file's bytes with sendfile(2) after the head; waits.
  error_code send_file(int fd, std::uint64_t offset, std::uint64_t count) {
    auto w = d_.make_waiter();
    ex_->send_file(fd, offset, count, [w](error_code ec) { w->complete(ec); });
    return w->wait();
  }

 private:
  /// The str's characters as bytes (latin-1, as PEP 3333 says); ASCII
  /// strings, nearly all of them, are copied without an encode.
  static std::string latin1_bytes(PyObject* s) {
    if (PyUnicode_IS_COMPACT_ASCII(s))
      return std::string(static_cast<const char*>(PyUnicode_DATA(s)), static_cast<std::size_t>(PyUnicode_GET_LENGTH(s)));
    PyObject* b = PyUnicode_AsLatin1String(s);
    if (!b) throw py::error_already_set();
    std::string out(PyBytes_AS_STRING(b), static_cast<std::size_t>(PyBytes_GET_SIZE(b)));
    Py_DECREF(b);
    return out;
  }

  std::shared_ptr<http::exchange> ex_;
  dispatcher& d_;  ///< how this request waits for the network
  std::optional<http::response_head> head_;
  bool head_sent_ = false;
  bool client_gone_ = false;
  bool streaming_ = false;
  std::string pending_;
};

// The objects apps call during a request are plain CPython types, not
// pybind11 classes: a greenlet may switch away inside read() or write(), and
// pybind11's per-call bookkeeping (loader_life_support, a thread-local
// stack) breaks when calls on one thread interleave. They are also cheaper.

namespace {

template <class T>
struct boxed {
  PyObject_HEAD
  T* value;
};

template <class T>
T& unbox(PyObject* self) {
  return *reinterpret_cast<boxed<T>*>(self)->value;
}

template <class T>
void boxed_dealloc(PyObject* self) {
  PyTypeObject* type = Py_TYPE(self);
  delete reinterpret_cast<boxed<T>*>(self)->value;
  type->tp_free(self);
  Py_DECREF(type);
}

/// Runs f, turning C++ exceptions into a Python error (returns NULL).
template <class F>
PyObject* guarded(F&& f) {
  try {
    return f();
  } catch (py::error_already_set& e) {
    e.restore();
  } catch (const std::exception& e) {
    PyErr_SetString(PyExc_RuntimeError, e.what());
  }
  return nullptr;
}

Py_ssize_t size_arg(PyObject* const* args, Py_ssize_t nargs) {
  if (nargs == 0 || args[0] == Py_None) return -1;
  Py_ssize_t n = PyNumber_AsSsize_t(args[0], PyExc_OverflowError);
  if (n == -1 && PyErr_Occurred()) throw py::error_already_set();
  return n;
}

PyObject* input_read(PyObject* self, PyObject* const* args, Py_ssize_t nargs) {
  return guarded([&] { return unbox<input_stream>(self).read(size_arg(args, nargs)).release().ptr(); });
}
PyObject* input_readline(PyObject* self, PyObject* const* args, Py_ssize_t nargs) {
  return guarded([&] { return unbox<input_stream>(self).readline(size_arg(args, nargs)).release().ptr(); });
}
PyObject* input_readlines(PyObject* self, PyObject* const* args, Py_ssize_t nargs) {
  return guarded([&] { return unbox<input_stream>(self).readlines(size_arg(args, nargs)).release().ptr(); });
}
PyObject* input_next(PyObject* self) {
  return guarded([&]() -> PyObject* {
    py::bytes line = unbox<input_stream>(self).readline(-1);
    if (PyBytes_GET_SIZE(line.ptr()) == 0) return nullptr;  // StopIteration
    return line.release().ptr();
  });
}

PyMethodDef input_methods[] = {
    {"read", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(input_read)), METH_FASTCALL,
     "read(size=-1): up to size bytes of the body (all of it by default)"},
    {"readline", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(input_readline)), METH_FASTCALL,
     "readline(size=-1): the next line of the body"},
    {"readlines", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(input_readlines)), METH_FASTCALL,
     "readlines(hint=-1): the remaining lines"},
    {nullptr, nullptr, 0, nullptr}};

PyType_Slot input_slots[] = {{Py_tp_dealloc, reinterpret_cast<void*>(boxed_dealloc<input_stream>)},
                             {Py_tp_methods, input_methods},
                             {Py_tp_iter, reinterpret_cast<void*>(PyObject_SelfIter)},
                             {Py_tp_iternext, reinterpret_cast<void*>(input_next)},
                             {Py_tp_doc, const_cast<char*>("environ['wsgi.input']: the request body, streamed.")},
                             {0, nullptr}};
PyType_Spec input_spec = {"baseplate_serve._core.InputStream", sizeof(boxed<input_stream>), 0, Py_TPFLAGS_DEFAULT,
                          input_slots};

PyObject* responder_write(PyObject* self, PyObject* data);
extern PyMethodDef responder_methods[];

PyObject* responder_call(PyObject* self, PyObject* args, PyObject* kwargs) {
  static const char* kwlist[] = {"status", "headers", "exc_info", nullptr};
  PyObject *status, *headers, *exc_info = Py_None;
  Py_ssize_t nargs = PyTuple_GET_SIZE(args);
  if (!kwargs && (nargs == 2 || nargs == 3)) {
    // start_response(status, headers[, exc_info]): what apps call, without
    // the general argument parser.
    status = PyTuple_GET_ITEM(args, 0);
    headers = PyTuple_GET_ITEM(args, 1);
    if (nargs == 3) exc_info = PyTuple_GET_ITEM(args, 2);
  } else if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OO|O:start_response", const_cast<char**>(kwlist), &status,
                                          &headers, &exc_info)) {
    return nullptr;
  }
  return guarded([&] {
    unbox<responder>(self).start_response(py::reinterpret_borrow<py::object>(status),
                                           py::reinterpret_borrow<py::object>(headers),
                                           py::reinterpret_borrow<py::object>(exc_info));
    // The write() callable: a bound method keeps the responder alive as
    // long as the app holds it.
    return PyCFunction_New(&responder_methods[0], self);
  });
}

PyObject* responder_write(PyObject* self, PyObject* data) {
  return guarded([&] {
    if (!PyBytes_Check(data)) throw py::type_error("write() takes bytes");
    unbox<responder>(self).write(py::reinterpret_borrow<py::bytes>(data));
    Py_RETURN_NONE;
  });
}

PyMethodDef responder_methods[] = {  // [0] is write: see responder_call
    {"write", responder_write, METH_O, "write(data): sends body bytes at once (PEP 3333's write callable)"},
    {nullptr, nullptr, 0, nullptr}};

PyType_Slot responder_slots[] = {{Py_tp_dealloc, reinterpret_cast<void*>(boxed_dealloc<responder>)},
                                 {Py_tp_call, reinterpret_cast<void*>(responder_call)},
                                 {Py_tp_methods, responder_methods},
                                 {Py_tp_doc, const_cast<char*>("The start_response callable of one request.")},
                                 {0, nullptr}};
PyType_Spec responder_spec = {"baseplate_serve._core.StartResponse", sizeof(boxed<responder>), 0,
                              Py_TPFLAGS_DEFAULT, responder_slots};

PyTypeObject* input_type = nullptr;
PyTypeObject* responder_type = nullptr;

template <class T>
py::object make_boxed(PyTypeObject* type, T* value) {
  PyObject* o = type->tp_alloc(type, 0);
  if (!o) {
    delete value;
    throw py::error_already_set();
  }
  reinterpret_cast<boxed<T>*>(o)->value = value;
  return py::reinterpret_steal<py::object>(o);
}

}  // namespace

void register_wsgi_types(py::module_& m) {
  input_type = reinterpret_cast<PyTypeObject*>(PyType_FromSpec(&input_spec));
  responder_type = reinterpret_cast<PyTypeObject*>(PyType_FromSpec(&responder_spec));
  if (!input_type || !responder_type) throw py::error_already_set();
  m.attr("InputStream") = py::reinterpret_borrow<py::object>(reinterpret_cast<PyObject*>(input_type));
  m.attr("StartResponse") = py::reinterpret_borrow<py::object>(reinterpret_cast<PyObject*>(responder_type));
}

wsgi_runner::wsgi_runner(wsgi_settings s) : s_(std::move(s)) {
  template_["wsgi.version"] = py::make_tuple(1, 0);
  template_["wsgi.url_scheme"] = "http";
  template_["wsgi.errors"] = py::module_::import("sys").attr("stderr");
  template_["wsgi.multithread"] = py::bool_(s_.dispatch->multithread());
  template_["wsgi.multiprocess"] = py::bool_(false);
  template_["wsgi.run_once"] = py::bool_(false);
  template_["wsgi.input_terminated"] = py::bool_(true);
  template_["wsgi.file_wrapper"] = s_.file_wrapper;
  template_["SCRIPT_NAME"] = "";
  template_["SERVER_NAME"] = s_.server_name;
  template_["SERVER_PORT"] = s_.server_port;
  // Placeholders for the keys every request sets: the copy of the template
  // is then sized for the whole environ, and setting them replaces values
  // instead of inserting (make_environ).
  for (const char* key : {"REQUEST_METHOD", "PATH_INFO", "QUERY_STRING", "SERVER_PROTOCOL", "REMOTE_ADDR",
                          "REMOTE_PORT", "wsgi.input"}) {
    PyObject* k = PyUnicode_InternFromString(key);  // the very key objects make_environ uses
    if (!k) throw py::error_already_set();
    template_[py::reinterpret_steal<py::str>(k)] = py::none();
  }
  logger_ = py::module_::import("logging").attr("getLogger")("baseplate_serve.wsgi");
}

namespace {

/// The environ's own keys, and values that repeat from request to request.
struct environ_strings {
  PyObject* request_method = interned("REQUEST_METHOD");
  PyObject* path_info = interned("PATH_INFO");
  PyObject* query_string = interned("QUERY_STRING");
  PyObject* server_protocol = interned("SERVER_PROTOCOL");
  PyObject* remote_addr = interned("REMOTE_ADDR");
  PyObject* remote_port = interned("REMOTE_PORT");
  PyObject* wsgi_input = interned("wsgi.input");
  PyObject* http_10 = interned("HTTP/1.0");
  PyObject* http_11 = interned("HTTP/1.1");
  PyObject* empty = interned("");
  PyObject* comma = interned(", ");
  PyObject* close = interned("close");
  std::array<std::pair<std::string_view, PyObject*>, 7> methods{{{"GET", interned("GET")},
                                                                 {"POST", interned("POST")},
                                                                 {"HEAD", interned("HEAD")},
                                                                 {"PUT", interned("PUT")},
                                                                 {"DELETE", interned("DELETE")},
                                                                 {"PATCH", interned("PATCH")},
                                                                 {"OPTIONS", interned("OPTIONS")}}};
  /// environ key of a header name as sent ("User-Agent" -> HTTP_USER_AGENT),
  /// or NULL for a name with "_" (dropped). Bounded: names past the bound
  /// are converted per request, so unique names sent by a client cannot grow it.
  std::unordered_map<std::string, PyObject*> header_keys;
  static constexpr std::size_t max_header_keys = 512;
};

// Leaked on purpose: no Python object may be released after finalization.
environ_strings& strings() {
  static environ_strings& s = *new environ_strings;
  return s;
}

/// A new reference to the environ key of header `name`, or NULL to drop it.
PyObject* header_key(std::string_view name) {
  auto& cache = strings().header_keys;
  auto it = cache.find(std::string(name));
  if (it != cache.end()) {
    Py_XINCREF(it->second);
    return it->second;
  }
  std::string key("HTTP_");
  for (char c : name) {
    // A name with "_" would be indistinguishable from one with "-" and
    // could spoof a header a proxy set: drop it, as nginx and gunicorn do.
    if (c == '_') {
      key.clear();
      break;
    }
    key.push_back(c == '-' ? '_' : static_cast<char>(std::toupper(static_cast<unsigned char>(c))));
  }
  PyObject* out = nullptr;
  if (!key.empty()) {
    std::string_view k = key;
    if (k == "HTTP_CONTENT_TYPE" || k == "HTTP_CONTENT_LENGTH") k.remove_prefix(5);
    out = PyUnicode_DecodeLatin1(k.data(), static_cast<Py_ssize_t>(k.size()), nullptr);
    if (!out) throw py::error_already_set();
    PyUnicode_InternInPlace(&out);
  }
  if (cache.size() < environ_strings::max_header_keys) {
    Py_XINCREF(out);
    cache.emplace(std::string(name), out);
  }
  return out;
}

/// Sets env[key] = value, stealing `value`.
void set_item(PyObject* env, PyObject* key, PyObject* value) {
  if (!value) throw py::error_already_set();
  int rc = PyDict_SetItem(env, key, value);
  Py_DECREF(value);
  if (rc < 0) throw py::error_already_set();
}

PyObject* new_latin1(std::string_view s) {
  return PyUnicode_DecodeLatin1(s.data(), static_cast<Py_ssize_t>(s.size()), nullptr);
}

PyObject* new_ref(PyObject* o) {
  Py_INCREF(o);
  return o;
}

/// The str of a per-connection value (REMOTE_ADDR, REMOTE_PORT), made again
/// only when it changes: a keep-alive connection's requests, and the
/// requests of clients on one host, share it. Used with the GIL held.
struct cached_str {
  std::string bytes;
  PyObject* str = nullptr;  // leaked on purpose, as strings() is

  PyObject* get(std::string_view value) {
    if (!str || value != bytes) {
      PyObject* s = PyUnicode_DecodeLatin1(value.data(), static_cast<Py_ssize_t>(value.size()), nullptr);
      if (!s) throw py::error_already_set();
      Py_XDECREF(str);
      str = s;
      bytes.assign(value.data(), value.size());
    }
    return new_ref(str);
  }
};

}  // namespace

py::dict wsgi_runner::make_environ(const http::request& r, py::object input) {
  auto& k = strings();
  PyObject* d = PyDict_Copy(template_.ptr());
  if (!d) throw py::error_already_set();
  py::dict env = py::reinterpret_steal<py::dict>(d);
  std::string_view target = r.target;
  // absolute-form (a proxy request): keep only the path and query
  if (target.rfind("http://", 0) == 0 || target.rfind("https://", 0) == 0) {
    auto slash = target.find('/', target.find("//") + 2);
    target = slash == std::string_view::npos ? std::string_view("/") : target.substr(slash);
  }
  auto q = target.find('?');
  std::string_view path = target.substr(0, q);
  std::string_view query = q == std::string_view::npos ? std::string_view() : target.substr(q + 1);
  PyObject* method = nullptr;
  for (auto& [name, str] : k.methods)
    if (name == r.method) method = new_ref(str);
  set_item(d, k.request_method, method ? method : new_latin1(r.method));
  set_item(d, k.path_info,
           path.find('%') == std::string_view::npos ? new_latin1(path) : new_latin1(percent_decode(path)));
  set_item(d, k.query_string, query.empty() ? new_ref(k.empty) : new_latin1(query));
  set_item(d, k.server_protocol, new_ref(r.version == 10 ? k.http_10 : k.http_11));
  static cached_str& remote_addr = *new cached_str;
  static cached_str& remote_port = *new cached_str;
  set_item(d, k.remote_addr, remote_addr.get(r.remote_host));
  char port[8];
  char* port_end = r.remote_port ? std::to_chars(port, port + sizeof port, r.remote_port).ptr : port;
  set_item(d, k.remote_port, remote_port.get(std::string_view(port, static_cast<std::size_t>(port_end - port))));
  if (PyDict_SetItem(d, k.wsgi_input, input.ptr()) < 0) throw py::error_already_set();
  for (const auto& [name, value] : r.headers) {
    PyObject* key = header_key(name);
    if (!key) continue;
    py::object key_ref = py::reinterpret_steal<py::object>(key);
    PyObject* v = new_latin1(value);
    if (!v) throw py::error_already_set();
    py::object v_ref = py::reinterpret_steal<py::object>(v);
    if (PyUnicode_READ_CHAR(key, 0) != 'H') {
      // CONTENT_TYPE, CONTENT_LENGTH: the last one sent wins.
      if (PyDict_SetItem(d, key, v) < 0) throw py::error_already_set();
      continue;
    }
    // Not `existing != v`: Python shares one object for equal short strs.
    Py_ssize_t size_before = PyDict_GET_SIZE(d);
    PyObject* existing = PyDict_SetDefault(d, key, v);  // borrowed
    if (!existing) throw py::error_already_set();
    if (PyDict_GET_SIZE(d) == size_before) {
      // A repeated header: its values joined with ", " (RFC 9110 5.3).
      PyObject* joined = PyUnicode_Concat(existing, k.comma);
      if (!joined) throw py::error_already_set();
      PyObject* all = PyUnicode_Concat(joined, v);
      Py_DECREF(joined);
      set_item(d, key, all);
    }
  }
  return env;
}

void wsgi_runner::run(std::shared_ptr<http::exchange> ex) {
  trace_scope trace(ex->req().trace_id, ex->req().span_id);
  py::object result;
  responder* resp = nullptr;
  py::object resp_obj, input_obj;
  auto on_error = [&](py::error_already_set& e) {
    bool client_gone = resp && resp->client_gone();
    bool too_large = input_obj && unbox<input_stream>(input_obj.ptr()).body_limit_hit_;
    if (too_large && resp && !resp->head_sent()) {
      http::response_part part;
      part.head = http::response_head{413, {}, {{"Content-Type", "text/plain"}}, true};  // constant: checked
      part.body = "Payload Too Large\n";
      part.last = true;
      ex->write(std::move(part), nullptr);
    } else if (!client_gone) {
      logger_.attr("error")("Unhandled error in WSGI app %s %s", ex->req().method, ex->req().target,
                            py::arg("exc_info") = exc_info(e));
      if (resp && !resp->head_sent()) {
        http::response_part part;
        part.head = http::response_head{500, {}, {{"Content-Type", "text/plain"}}, true};  // constant: checked
        part.body = "Internal Server Error\n";
        part.last = true;
        ex->write(std::move(part), nullptr);
      } else {
        ex->abort();
      }
    } else {
      ex->abort();
    }
  };
  try {
    resp_obj = make_boxed(responder_type, new responder(ex, *s_.dispatch));
    resp = &unbox<responder>(resp_obj.ptr());
    input_obj = make_boxed(input_type, new input_stream(ex, *s_.dispatch));
    py::object& input = input_obj;
    py::dict env = make_environ(ex->req(), input);
    PyObject* args[] = {env.ptr(), resp_obj.ptr()};
    result = py::reinterpret_steal<py::object>(PyObject_Vectorcall(s_.app.ptr(), args, 2, nullptr));
    if (!result) throw py::error_already_set();

    bool sent_file = false;
    bool plain = PyList_CheckExact(result.ptr()) || PyTuple_CheckExact(result.ptr());
    if (!plain && !s_.file_wrapper.is_none() && py::isinstance(result, s_.file_wrapper) && resp->head_set()) {
      // sendfile(2) when the wrapped object is a regular file
      py::object filelike = result.attr("filelike");
      int fd = -1;
      if (py::hasattr(filelike, "fileno")) {
        try {
          fd = filelike.attr("fileno")().cast<int>();
        } catch (py::error_already_set&) {
          fd = -1;
        }
      }
      struct stat st{};
      if (fd >= 0 && ::fstat(fd, &st) == 0 && S_ISREG(st.st_mode)) {
        if (py::hasattr(filelike, "flush")) filelike.attr("flush")();
        std::int64_t offset = py::hasattr(filelike, "tell") ? filelike.attr("tell")().cast<std::int64_t>() : 0;
        std::uint64_t count = st.st_size > offset ? static_cast<std::uint64_t>(st.st_size - offset) : 0;
        auto& headers = resp->head().headers;
        bool has_length = false;
        for (auto& [n, v] : headers)
          if (strcasecmp(n.c_str(), "content-length") == 0) {
            has_length = true;
            count = std::min<std::uint64_t>(count, std::stoull(v));
          }
        if (!has_length) headers.emplace_back("Content-Length", std::to_string(count));
        resp->flush_body({}, false, true);
        if (auto ec = resp->send_file(fd, static_cast<std::uint64_t>(offset), count)) raise_io("sendfile", ec);
        resp->finish();
        sent_file = true;
      }
    }
    if (!sent_file) {
      if (plain) {
        resp->send_sequence(result.ptr());
      } else {
        resp->set_streaming();
        py::iterator it = py::iter(result);
        while (it != py::iterator::sentinel()) {
          resp->add(it->ptr());
          ++it;
        }
        resp->finish();
      }
    }
  } catch (py::error_already_set& e) {
    on_error(e);
  } catch (py::builtin_exception& e) {
    // A TypeError or ValueError raised by our own checks of what the app
    // returned: handled like the app's own exceptions.
    e.set_error();
    py::error_already_set err;
    on_error(err);
  }
  // A list or tuple has no close(); anything else may (PEP 3333).
  if (result && !PyList_CheckExact(result.ptr()) && !PyTuple_CheckExact(result.ptr())) {
    try {
      PyObject* close = optional_attr(result.ptr(), strings().close);
      if (close) {
        py::object close_ref = py::reinterpret_steal<py::object>(close);
        close_ref();
      }
    } catch (py::error_already_set& e) {
      logger_.attr("error")("Error closing the WSGI iterable",
                            py::arg("exc_info") = exc_info(e));
    }
  }
}

}  // namespace baseplate::python
