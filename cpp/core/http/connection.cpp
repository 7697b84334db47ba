#include "connection.hpp"

#include "../io_thread.hpp"
#include "../log.hpp"
#include "../trace.hpp"

#include <boost/asio/ip/address.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/field.hpp>

#include <netinet/in.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdio>
#include <algorithm>
#include <cctype>
#include <cstring>

namespace baseplate::http {
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
namespace asio = boost::asio;
using boost::system::error_code;

namespace {
constexpr const char* logger = "baseplate_serve.http";
/// Largest single socket read, and largest body piece handed to an app.
constexpr std::size_t read_chunk = 64 * 1024;
constexpr std::chrono::seconds linger_time{2};

void describe(const asio::generic::stream_protocol::endpoint& ep, std::string& host, std::uint16_t& port) {
  const sockaddr* sa = ep.data();
  if (sa->sa_family == AF_INET) {
    auto* in = reinterpret_cast<const sockaddr_in*>(sa);
    asio::ip::address_v4::bytes_type b;
    std::memcpy(b.data(), &in->sin_addr, 4);
    host = asio::ip::address_v4(b).to_string();
    port = ntohs(in->sin_port);
  } else if (sa->sa_family == AF_INET6) {
    auto* in6 = reinterpret_cast<const sockaddr_in6*>(sa);
    asio::ip::address_v6::bytes_type b;
    std::memcpy(b.data(), &in6->sin6_addr, 16);
    host = asio::ip::address_v6(b, in6->sin6_scope_id).to_string();
    port = ntohs(in6->sin6_port);
  }
}

bool iequals(beast::string_view a, beast::string_view b) { return beast::iequals(a, b); }
}  // namespace

/// The app's handle on one request. Every call is posted to the
/// connection's thread; calls for a request that has ended are refused.
class connection::exchange_impl final : public exchange {
 public:
  exchange_impl(std::shared_ptr<connection> c, request r, std::uint64_t id)
      : conn_(std::move(c)), req_(std::move(r)), id_(id) {}
  ~exchange_impl() override {
    conn_->pending_->fetch_sub(1, std::memory_order_relaxed);
    // An app that dropped the exchange without finishing the response must
    // not leave the client hanging.
    if (!finished_) asio::post(conn_->socket_.get_executor(), [c = conn_, id = id_] { c->app_abort(id); });
  }

  const request& req() const override { return req_; }

  void read_body(std::size_t max, read_handler h) override {
    asio::post(conn_->socket_.get_executor(),
               [c = conn_, id = id_, max, h = std::move(h)]() mutable { c->app_read(id, max, std::move(h)); });
  }

  void write(response_part part, write_handler h) override {
    if (part.last) finished_ = true;
    pending_write w{std::move(part), std::move(h)};
    asio::post(conn_->socket_.get_executor(),
               [c = conn_, id = id_, w = std::move(w)]() mutable { c->app_write(id, std::move(w)); });
  }

  void send_file(int fd, std::uint64_t offset, std::uint64_t count, write_handler h) override {
    pending_write w{{}, std::move(h), fd, offset, count};
    asio::post(conn_->socket_.get_executor(),
               [c = conn_, id = id_, w = std::move(w)]() mutable { c->app_write(id, std::move(w)); });
  }

  void abort() override {
    finished_ = true;
    asio::post(conn_->socket_.get_executor(), [c = conn_, id = id_] { c->app_abort(id); });
  }

 private:
  std::shared_ptr<connection> conn_;
  request req_;
  std::uint64_t id_;
  bool finished_ = false;
};

connection::connection(socket_type socket, io_thread& thread, handler& app, const server_options& opts)
    : socket_(std::move(socket)), thread_(thread), app_(app), opts_(opts), pending_(opts.pending_requests) {
  error_code ec;
  describe(socket_.remote_endpoint(ec), remote_host_, remote_port_);
  describe(socket_.local_endpoint(ec), local_host_, local_port_);
  socket_.native_non_blocking(true, ec);  // sendfile(2) relies on it
}

connection::~connection() = default;

void connection::start() { read_request(); }

// ---------------------------------------------------------------- requests

void connection::read_request() {
  header_bytes_ = 0;
  parser_.emplace();
  parser_->header_limit(opts_.max_header_size);
  if (opts_.max_body_size)
    parser_->body_limit(opts_.max_body_size);
  else
    parser_->body_limit(boost::none);
  head_sent_ = false;
  writes_.clear();
  body_pending_.clear();
  body_done_ = true;
  continue_sent_ = false;
  if (buffer_.size() > 0) {
    phase_ = phase::header;
    deadline_ = clock::now() + opts_.header_timeout;
    parse_header();
    return;
  }
  if (stopping_) {
    close();
    return;
  }
  phase_ = phase::idle;
  // A new connection gets the header timeout for its first request; later
  // ones may idle for the keep-alive timeout.
  deadline_ = clock::now() + (request_id_ == 0 ? opts_.header_timeout : opts_.keepalive_timeout);
  socket_.async_read_some(buffer_.prepare(read_chunk),
                          [self = self()](error_code ec, std::size_t n) { self->on_read(ec, n, true); });
}

void connection::on_read(error_code ec, std::size_t n, bool header) {
  if (phase_ == phase::closed) return;
  if (ec) {
    if (phase_ == phase::header && buffer_.size() > 0 && ec == asio::error::eof && log::enabled(log::level::debug))
      log::write(log::level::debug, logger, "client closed the connection in the middle of a request header");
    close();
    return;
  }
  buffer_.commit(n);
  if (phase_ == phase::idle) {
    phase_ = phase::header;
    deadline_ = clock::now() + opts_.header_timeout;
  }
  parse_header();
}

void connection::parse_header() {
  // RFC 9112 section 2.2: empty lines before a request line are ignored.
  while (header_bytes_ == 0 && buffer_.size() >= 2) {
    auto* p = static_cast<const char*>(buffer_.data().data());
    if (p[0] == '\r' && p[1] == '\n')
      buffer_.consume(2);
    else
      break;
  }
  // RFC 9110 section 2.5: a higher minor version of HTTP/1 is served as the
  // highest we speak, 1.1. Beast refuses versions above 1.1, so a complete
  // request line ending in "HTTP/1.<2-9>" gets its digit rewritten in place.
  if (header_bytes_ == 0 && buffer_.size() > 0) {
    auto* p = static_cast<char*>(buffer_.data().data());
    auto* eol = static_cast<char*>(std::memchr(p, '\n', buffer_.size()));
    std::size_t line = eol ? static_cast<std::size_t>(eol - p) : buffer_.size();
    if (line > 0 && p[line - 1] == '\r') --line;  // the line without its CRLF
    if (opts_.max_request_line && line > opts_.max_request_line) return fail_request(414, "request line too long");
    if (eol && eol - p >= 10 && eol[-1] == '\r' && eol[-2] > '1' && eol[-2] <= '9' &&
        std::memcmp(eol - 10, " HTTP/1.", 8) == 0)
      eol[-2] = '1';
  }
  error_code ec;
  auto used = parser_->put(buffer_.data(), ec);
  buffer_.consume(used);
  // Beast counts its header limit per put() call; a header arriving in
  // pieces is counted here as a whole.
  header_bytes_ += used;
  if (header_bytes_ > opts_.max_header_size ||
      (ec == bhttp::error::need_more && buffer_.size() + header_bytes_ > opts_.max_header_size) ||
      ec == bhttp::error::header_limit) {
    // No end of line yet: the request line itself is too long.
    auto* p = static_cast<const char*>(buffer_.data().data());
    if (header_bytes_ == 0 && std::memchr(p, '\n', buffer_.size()) == nullptr)
      return fail_request(414, "request target too long");
    return fail_request(431, "request header section too large");
  }
  if (ec == bhttp::error::need_more) {
    socket_.async_read_some(buffer_.prepare(read_chunk),
                            [self = self()](error_code e, std::size_t n) { self->on_read(e, n, true); });
    return;
  }
  if (ec == bhttp::error::bad_version) {
    // A well-formed version we do not speak (HTTP/2.0 over HTTP/1 framing)
    // is 505; anything else in its place is a bad request.
    std::string_view data(static_cast<const char*>(buffer_.data().data()), buffer_.size());
    auto line = data.substr(0, data.find('\r'));
    auto space = line.rfind(' ');
    auto version = space == std::string_view::npos ? std::string_view() : line.substr(space + 1);
    bool three_parts = std::count(line.begin(), line.end(), ' ') == 2 && line.find('\n') == std::string_view::npos;
    bool well_formed = three_parts && version.size() == 8 && version.substr(0, 5) == "HTTP/" &&
                       std::isdigit(static_cast<unsigned char>(version[5])) && version[6] == '.' &&
                       std::isdigit(static_cast<unsigned char>(version[7])) && version != "HTTP/1.1" &&
                       version != "HTTP/1.0";
    return fail_request(well_formed ? 505 : 400, "HTTP version not supported");
  }
  if (ec == bhttp::error::body_limit) return fail_request(413, "request body too large");
  if (ec) return fail_request(400, ec.message());
  if (parser_->is_header_done()) on_header();
}

void connection::on_header() {
  auto& msg = parser_->get();
  version_ = msg.version() == 10 ? 10 : 11;
  if (msg.version() != 10 && msg.version() != 11) return fail_request(505, "HTTP version not supported");
  is_head_ = msg.method() == bhttp::verb::head;
  // One pass over the fields for every check below (Beast's count() and
  // find() each search its case-insensitive index).
  std::size_t fields = 0, hosts = 0, transfer_encodings = 0, content_lengths = 0;
  const bhttp::fields::value_type* host = nullptr;
  const bhttp::fields::value_type* te = nullptr;
  const bhttp::fields::value_type* expect = nullptr;
  for (auto& f : msg) {
    ++fields;
    switch (f.name()) {
      case bhttp::field::host:
        ++hosts;
        host = &f;
        break;
      case bhttp::field::transfer_encoding:
        ++transfer_encodings;
        te = &f;
        break;
      case bhttp::field::content_length:
        ++content_lengths;
        break;
      case bhttp::field::expect:
        if (!expect) expect = &f;
        break;
      default:
        break;
    }
  }
  if (opts_.max_header_count && fields > opts_.max_header_count) return fail_request(431, "too many header fields");
  keep_alive_ = parser_->keep_alive();
  expect_continue_ = false;
  // RFC 9112 section 3.2: exactly one Host in HTTP/1.1, a valid authority.
  if (hosts > 1 || (hosts == 0 && version_ == 11)) return fail_request(400, "missing or repeated Host header");
  if (hosts == 1) {
    for (unsigned char c : host->value())
      if (c <= 0x20 || c == 0x7f || c == '/' || c == '@' || c == '\\' || c == '?' || c == '#')
        return fail_request(400, "invalid Host header");
  }
  // Section 3.2: origin-form, absolute-form with a host, or "*" for OPTIONS.
  auto target = msg.target();
  bool origin = !target.empty() && target[0] == '/';
  bool asterisk = target == "*" && msg.method() == bhttp::verb::options;
  bool absolute = false;
  for (std::string_view scheme : {"http://", "https://"})
    if (target.size() > scheme.size() && beast::iequals(target.substr(0, scheme.size()), scheme) &&
        target[scheme.size()] != '/' && target.find_first_of(" []%", scheme.size()) == std::string_view::npos)
      absolute = true;
  if (!origin && !asterisk && !absolute) return fail_request(400, "invalid request target");
  // Section 6.1/6.3: a Transfer-Encoding must end in chunked, and must not
  // come with a Content-Length (request smuggling).
  if (transfer_encodings > 0) {
    if (!parser_->chunked()) return fail_request(400, "Transfer-Encoding without chunked last");
    // Only chunked alone: other codings would reach the app still coded.
    if (transfer_encodings != 1 || !iequals(te->value(), "chunked"))
      return fail_request(501, "unsupported transfer coding");
    if (content_lengths > 0) return fail_request(400, "both Transfer-Encoding and Content-Length");
  }
  if (expect) {
    if (!iequals(expect->value(), "100-continue")) return fail_request(417, "unsupported Expect");
    expect_continue_ = version_ == 11;
  }
  body_done_ = parser_->is_done();
  parser_->eager(true);
  phase_ = phase::prebody;
  bool small = parser_->chunked() || (parser_->content_length() && *parser_->content_length() <= opts_.body_preread);
  if (!body_done_ && !expect_continue_ && small && opts_.body_preread > 0) {
    fill_body(opts_.body_preread, [self = self()](error_code ec) {
      if (ec) {
        if (ec == bhttp::error::body_limit) return self->fail_request(413, "request body too large");
        if (ec == bhttp::error::partial_message || ec == asio::error::eof || ec == asio::error::operation_aborted)
          return self->close();
        return self->fail_request(400, ec.message());
      }
      self->dispatch();
    });
    return;
  }
  dispatch();
}

void connection::dispatch() {
  auto& msg = parser_->get();
  request r;
  r.method = std::string(msg.method_string());
  r.target = std::string(msg.target());
  r.version = version_;
  r.headers.reserve(8);
  trace_context tc;
  std::string_view traceparent;
  for (auto& f : msg) {
    r.headers.emplace_back(std::string(f.name_string()), std::string(f.value()));
    if (f.name() != bhttp::field::unknown) continue;  // none of the trace headers is a known field
    auto name = f.name_string();
    if (beast::iequals(name, "x-trace"))
      tc.trace_id = std::string(f.value());
    else if (beast::iequals(name, "x-span"))
      tc.span_id = std::string(f.value());
    else if (beast::iequals(name, "traceparent"))
      traceparent = f.value();
  }
  if (tc.trace_id.empty() && !traceparent.empty()) parse_traceparent(traceparent, tc);
  r.trace_id = tc.trace_id;
  r.span_id = std::move(tc.span_id);
  trace_id_ = tc.trace_id.empty() ? "-" : std::move(tc.trace_id);
  if (opts_.access_log) {
    started_ = clock::now();
    access_line_ = r.method + " " + r.target;
    status_ = 0;
    body_bytes_ = 0;
  }
  r.content_length = parser_->content_length() ? std::optional<std::uint64_t>(*parser_->content_length()) : std::nullopt;
  r.chunked = parser_->chunked();
  r.expect_continue = expect_continue_;
  r.remote_host = remote_host_;
  r.remote_port = remote_port_;
  r.local_host = local_host_;
  r.local_port = local_port_;
  // Load shedding: a request the app could only queue behind
  // max_pending_requests others is refused at once (each exchange counts
  // down when it ends).
  if (pending_->fetch_add(1, std::memory_order_relaxed) >= opts_.max_pending_requests && opts_.max_pending_requests) {
    pending_->fetch_sub(1, std::memory_order_relaxed);
    return fail_request(503, "too many pending requests (max_pending_requests)");
  }
  phase_ = phase::app;
  deadline_ = clock::time_point::max();
  auto ex = std::make_shared<exchange_impl>(self(), std::move(r), request_id_);
  log::scoped_trace trace(trace_id_);
  app_.handle(std::move(ex));
}

void connection::fail_request(unsigned status, std::string_view why) {
  if (log::enabled(log::level::debug))
    log::write(log::level::debug, logger,
               "rejected request from " + remote_host_ + ": " + std::to_string(status) + " " + std::string(why));
  phase_ = phase::app;
  keep_alive_ = false;
  head_sent_ = false;
  is_head_ = false;
  writes_.clear();
  response_head head;
  head.status = status;
  head.headers.emplace_back("Content-Type", "text/plain");
  pending_write w;
  w.part.head = std::move(head);
  w.part.body = std::string(reason_phrase(status)) + "\n";
  w.part.last = true;
  writes_.push_back(std::move(w));
  if (!writing_) next_write();
}

// -------------------------------------------------------------------- body

void connection::parse_body(std::size_t want, error_code& ec) {
  while (body_pending_.size() < want && !parser_->is_done() && buffer_.size() > 0) {
    std::size_t old = body_pending_.size();
    std::size_t space = want - old;
    body_pending_.resize(old + space);
    auto& body = parser_->get().body();
    body.data = &body_pending_[old];
    body.size = space;
    auto used = parser_->put(buffer_.data(), ec);
    buffer_.consume(used);
    body_pending_.resize(old + space - body.size);
    body.data = nullptr;
    body.size = 0;
    if (ec == bhttp::error::need_buffer) {
      ec = {};
      continue;
    }
    if (ec == bhttp::error::need_more) {
      ec = {};
      break;
    }
    if (ec) return;
  }
  body_done_ = parser_->is_done();
}

void connection::fill_body(std::size_t want, std::function<void(error_code)> done) {
  error_code ec;
  parse_body(want, ec);
  if (ec || body_done_ || body_pending_.size() >= want) return done(ec);
  reading_body_ = true;
  deadline_ = clock::now() + opts_.io_timeout;
  socket_.async_read_some(buffer_.prepare(read_chunk),
                          [self = self(), want, done = std::move(done)](error_code e, std::size_t n) mutable {
                            self->reading_body_ = false;
                            if (self->phase_ == phase::app) self->deadline_ = clock::time_point::max();
                            if (self->phase_ == phase::closed) return done(asio::error::operation_aborted);
                            if (e) return done(e == asio::error::eof ? error_code(bhttp::error::partial_message) : e);
                            self->buffer_.commit(n);
                            self->fill_body(want, std::move(done));
                          });
}

void connection::app_read(std::uint64_t id, std::size_t max, read_handler h) {
  if (id != request_id_ || phase_ != phase::app) return h(asio::error::operation_aborted, {});
  if (max == 0) max = read_chunk;
  if (!body_pending_.empty()) {
    if (max >= body_pending_.size()) {
      body_delivered_.swap(body_pending_);
      body_pending_.clear();
    } else {
      body_delivered_.assign(body_pending_, 0, max);
      body_pending_.erase(0, max);
    }
    return h({}, body_delivered_);
  }
  if (body_done_) return h({}, {});
  auto fill = [self = self(), id, max, h = std::move(h)]() mutable {
    self->fill_body(std::min(max, read_chunk), [self, id, max, h = std::move(h)](error_code ec) mutable {
      if (ec) {
        if (ec != asio::error::operation_aborted) self->keep_alive_ = false;
        return h(ec, {});
      }
      self->app_read(id, max, std::move(h));
    });
  };
  if (expect_continue_ && !continue_sent_ && !head_sent_ && !writing_) {
    continue_sent_ = true;
    writing_ = true;
    deadline_ = clock::now() + opts_.io_timeout;
    static const char interim[] = "HTTP/1.1 100 Continue\r\n\r\n";
    asio::async_write(socket_, asio::buffer(interim, sizeof interim - 1),
                      [self = self(), fill = std::move(fill)](error_code ec, std::size_t) mutable {
                        self->writing_ = false;
                        if (ec) {
                          self->close();
                        } else {
                          self->next_write();
                        }
                        fill();  // after close() this reports operation_aborted
                      });
    return;
  }
  fill();
}

// ---------------------------------------------------------------- response

void connection::app_write(std::uint64_t id, pending_write w) {
  if (id != request_id_ || phase_ != phase::app) {
    if (w.done) w.done(asio::error::operation_aborted);
    return;
  }
  writes_.push_back(std::move(w));
  if (!writing_) next_write();
}

void connection::app_abort(std::uint64_t id) {
  if (id == request_id_ && phase_ == phase::app) close();
}

void connection::next_write() {
  if (writes_.empty() || writing_ || phase_ == phase::closed) return;
  writing_ = true;
  deadline_ = clock::now() + opts_.io_timeout;
  auto& w = writes_.front();
  if (w.file_fd >= 0)
    write_file(w);
  else
    write_part(w);
}

void connection::write_part(pending_write& w) {
  log::scoped_trace trace(trace_id_);
  out_.clear();
  static thread_local std::string trailer;
  trailer.clear();
  auto& part = w.part;
  if (part.head) {
    if (head_sent_) {
      log::write(log::level::error, logger, "app sent a second response head");
      writing_ = false;
      return close();
    }
    framing f;
    if (auto err = inspect(*part.head, f)) {
      log::write(log::level::error, logger, "app sent an invalid response head: " + *err);
      *part.head = response_head{500, {}, {{"Content-Type", "text/plain"}}};
      part.body = "Internal Server Error\n";
      part.last = true;
      f = framing{};
      keep_alive_ = false;
    }
    unsigned status = part.head->status;
    status_ = status;
    // A body the app has not read (yet) makes the connection unusable after
    // this response unless the app reads it all: announce the close now.
    keep_alive_ = keep_alive_ && !stopping_ && parser_->is_done();
    append_head(out_, version_, *part.head);
    if (f.content_length) {
      mode_ = body_mode::length;
      remaining_ = *f.content_length;
    } else if (status_has_no_body(status)) {
      mode_ = body_mode::none;
    } else if (part.last && !f.app_transfer_encoding) {
      mode_ = body_mode::length;
      remaining_ = part.body.size();
      out_.append("Content-Length: ");
      out_.append(std::to_string(remaining_));
      out_.append("\r\n");
    } else if (version_ == 11 && !f.app_transfer_encoding) {
      mode_ = body_mode::chunked;
      out_.append("Transfer-Encoding: chunked\r\n");
    } else {
      mode_ = body_mode::until_close;
      keep_alive_ = false;
    }
    if (is_head_ || status_has_no_body(status)) {
      // Framing headers stay as computed (a HEAD reply describes the GET
      // reply) but no body bytes follow.
      mode_ = body_mode::none;
      remaining_ = 0;
    }
    if (!keep_alive_)
      out_.append("Connection: close\r\n");
    else if (version_ == 10)
      out_.append("Connection: keep-alive\r\n");
    out_.append("\r\n");
    head_sent_ = true;
  } else if (!head_sent_) {
    log::write(log::level::error, logger, "app sent body bytes before a response head");
    writing_ = false;
    return close();
  }

  std::size_t body_len = part.body.size();
  switch (mode_) {
    case body_mode::none:
      body_len = 0;
      break;
    case body_mode::length:
      if (body_len > remaining_) {
        log::write(log::level::warning, logger, "app wrote more than its Content-Length; the excess is dropped");
        body_len = static_cast<std::size_t>(remaining_);
        keep_alive_ = false;
      }
      remaining_ -= body_len;
      break;
    case body_mode::chunked:
      if (body_len > 0) {
        char hex[32];
        int k = std::snprintf(hex, sizeof hex, "%zx\r\n", body_len);
        out_.append(hex, static_cast<std::size_t>(k));
        trailer.append("\r\n");
      }
      if (part.last) trailer.append("0\r\n\r\n");
      break;
    case body_mode::until_close:
      break;
  }
  if (part.last && mode_ == body_mode::length && remaining_ > 0) {
    // The app sent less than it declared: the client can only find the end
    // of this response by the connection closing.
    log::write(log::level::warning, logger, "app sent less than its Content-Length; closing the connection");
    keep_alive_ = false;
  }
  body_bytes_ += body_len;
  std::array<asio::const_buffer, 3> bufs{asio::buffer(out_), asio::buffer(part.body.data(), body_len),
                                         asio::buffer(trailer)};
  // The trailer is thread-local scratch: copy it next to the head so it
  // lives until the write completes.
  if (!trailer.empty()) {
    std::size_t head_len = out_.size();
    out_.append(trailer);
    bufs[0] = asio::buffer(out_.data(), head_len);
    bufs[2] = asio::buffer(out_.data() + head_len, trailer.size());
  }
  asio::async_write(socket_, bufs, [self = self()](error_code ec, std::size_t) { self->on_written(ec); });
}

void connection::write_file(pending_write& w) {
  if (!head_sent_ || (mode_ != body_mode::length && mode_ != body_mode::until_close && mode_ != body_mode::none)) {
    return on_written(asio::error::operation_not_supported);
  }
  std::uint64_t limit = mode_ == body_mode::length ? std::min(w.file_count, remaining_) : w.file_count;
  if (mode_ == body_mode::none) limit = 0;
  while (limit > 0) {
    off_t off = static_cast<off_t>(w.file_offset);
    std::size_t want = static_cast<std::size_t>(std::min<std::uint64_t>(limit, 1 << 30));
    ssize_t n = ::sendfile(socket_.native_handle(), w.file_fd, &off, want);
    if (n > 0) {
      w.file_offset += static_cast<std::uint64_t>(n);
      w.file_count -= static_cast<std::uint64_t>(n);
      limit -= static_cast<std::uint64_t>(n);
      if (mode_ == body_mode::length) remaining_ -= static_cast<std::uint64_t>(n);
      body_bytes_ += static_cast<std::uint64_t>(n);
      continue;
    }
    if (n == 0) break;  // the file is shorter than announced
    if (errno == EINTR) continue;
    if (errno == EAGAIN) return wait_file_writable();
    return on_written(error_code(errno, boost::system::system_category()));
  }
  on_written({});
}

void connection::wait_file_writable() {
  deadline_ = clock::now() + opts_.io_timeout;
  socket_.async_wait(asio::socket_base::wait_write, [self = self()](error_code ec) {
    if (ec || self->phase_ == phase::closed) return self->on_written(ec ? ec : asio::error::operation_aborted);
    self->write_file(self->writes_.front());
  });
}

void connection::on_written(error_code ec) {
  writing_ = false;
  if (writes_.empty()) return;  // close() already failed everything
  pending_write w = std::move(writes_.front());
  writes_.pop_front();
  if (phase_ == phase::app) deadline_ = clock::time_point::max();
  if (ec || phase_ == phase::closed) {
    close();
    auto rest = std::move(writes_);
    writes_.clear();
    if (w.done) w.done(ec ? ec : error_code(asio::error::operation_aborted));
    for (auto& r : rest)
      if (r.done) r.done(asio::error::operation_aborted);
    return;
  }
  bool last = w.part.last;
  if (w.done) w.done({});
  if (last)
    finish_request();
  else
    next_write();
}

void connection::write_access_log() {
  auto us = std::chrono::duration_cast<std::chrono::microseconds>(clock::now() - started_).count();
  char tail[96];
  std::snprintf(tail, sizeof tail, " %u %llu %.3fms", status_, static_cast<unsigned long long>(body_bytes_),
                static_cast<double>(us) / 1000.0);
  log::scoped_trace trace(trace_id_);
  log::write(log::level::info, "baseplate_serve.access", remote_host_ + " \"" + access_line_ + "\"" + tail);
}

void connection::finish_request() {
  if (opts_.access_log && !access_line_.empty()) write_access_log();
  access_line_.clear();
  trace_id_ = "-";
  ++request_id_;
  bool reusable = keep_alive_ && !stopping_ && parser_->is_done();
  if (!reusable) {
    // Linger only when the client may still be sending (an unread body or
    // more pipelined requests); otherwise close at once.
    if (parser_->is_done() && buffer_.size() == 0) {
      error_code ec;
      socket_.shutdown(asio::socket_base::shutdown_send, ec);
      return close();
    }
    return linger_close();
  }
  read_request();
}

// --------------------------------------------------------------- lifecycle

void connection::linger_close() {
  // Half-close, then read and drop what the client still sends for a short
  // while, so a final response is not lost to a reset.
  error_code ec;
  socket_.shutdown(asio::socket_base::shutdown_send, ec);
  if (ec) return close();
  phase_ = phase::header;
  deadline_ = clock::now() + linger_time;
  auto drain = std::make_shared<std::function<void()>>();
  *drain = [self = self(), drain]() {
    self->socket_.async_read_some(self->buffer_.prepare(read_chunk), [self, drain](error_code e, std::size_t) {
      if (e || self->phase_ == phase::closed) {
        *drain = nullptr;  // break the cycle
        return self->close();
      }
      (*drain)();
    });
  };
  (*drain)();
}

void connection::shutdown() {
  stopping_ = true;
  if (phase_ == phase::idle) close();
}

void connection::close() {
  if (phase_ == phase::closed) return;
  auto keep = self();
  phase_ = phase::closed;
  error_code ec;
  socket_.close(ec);
  if (!writing_) {
    auto pending = std::move(writes_);
    writes_.clear();
    for (auto& w : pending)
      if (w.done) w.done(asio::error::operation_aborted);
  }
  thread_.remove(this);
}

void connection::check_deadline(clock::time_point now) {
  if (phase_ != phase::closed && now >= deadline_) {
    if (log::enabled(log::level::debug))
      log::write(log::level::debug, logger, "closing connection from " + remote_host_ + ": timed out");
    close();
  }
}

}  // namespace baseplate::http
