#include "connection.hpp"

#include "../io_thread.hpp"
#include "../log.hpp"

#include <boost/asio/write.hpp>
#include <boost/beast/http/error.hpp>

#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include <array>
#include <atomic>
#include <cerrno>
#include <cstdio>

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

/// The error an app's body read gets for a rejection by the reader, and
/// back: 413 is body_limit (the WSGI bridge answers 413 for it).
error_code read_error(unsigned status) {
  if (status == 413) return bhttp::error::body_limit;
  if (status == 431) return bhttp::error::header_limit;
  return bhttp::error::bad_chunk;
}
unsigned reject_status(error_code ec) {
  if (ec == bhttp::error::body_limit) return 413;
  if (ec == bhttp::error::header_limit) return 431;
  return 400;
}
}  // namespace

/// The app's handle on one request. Every call is posted to the
/// connection's thread; calls for a request that has ended are refused.
class connection::exchange_impl final : public exchange {
 public:
  exchange_impl(std::shared_ptr<connection> c, std::shared_ptr<const request> r, std::uint64_t id)
      : conn_(std::move(c)), req_(std::move(r)), id_(id) {}
  ~exchange_impl() override {
    conn_->pending_->fetch_sub(1, std::memory_order_relaxed);
    // An app that dropped the exchange without finishing the response must
    // not leave the client hanging.
    if (!finished_)
      conn_->post([c = conn_, id = id_] { c->app_abort(id, "app dropped a request without answering it"); });
  }

  const request& req() const override { return *req_; }

  void read_body(std::size_t max, read_handler h) override {
    conn_->post([c = conn_, id = id_, max, h = std::move(h)]() mutable { c->app_read(id, max, std::move(h)); });
  }

  void write(response_part part, write_handler h) override {
    if (part.last) finished_ = true;
    conn_->post([c = conn_, id = id_, w = pending_write{std::move(part), std::move(h)}]() mutable {
      c->app_write(id, std::move(w));
    });
  }

  void send_file(int fd, std::uint64_t offset, std::uint64_t count, write_handler h) override {
    conn_->post([c = conn_, id = id_, w = pending_write{{}, std::move(h), fd, offset, count}]() mutable {
      c->app_write(id, std::move(w));
    });
  }

  void abort() override {
    finished_ = true;
    conn_->post([c = conn_, id = id_] { c->app_abort(id, nullptr); });
  }

 private:
  std::shared_ptr<connection> conn_;
  /// The connection's slot the head was read into: not reused while held.
  std::shared_ptr<const request> req_;
  std::uint64_t id_;
  bool finished_ = false;
};

connection::connection(socket_type socket, io_thread& thread, handler& app, const server_options& opts)
    : stream_connection(std::move(socket), thread, opts), app_(app), reader_(opts) {
  error_code ec;
  this->socket().native_non_blocking(true, ec);  // sendfile(2) relies on it
}

connection::~connection() = default;

void connection::start() { read_request(); }

// ---------------------------------------------------------------- requests

request* connection::free_slot() {
  // The slot of the last request when its exchange is gone (use_count 1:
  // only this connection holds it, and only this thread could copy it),
  // else the other one, else a new one in place of the other.
  for (std::size_t i = 0; i < slots_.size(); ++i) {
    std::size_t k = (slot_ + i) % slots_.size();
    if (slots_[k] && slots_[k].use_count() == 1) {
      // The app's thread dropped its reference with a release; this makes
      // its last reads of the head happen before the reader's writes.
      std::atomic_thread_fence(std::memory_order_acquire);
      slot_ = k;
      return slots_[k].get();
    }
  }
  slot_ = (slot_ + 1) % slots_.size();
  auto r = std::make_shared<request>();
  r->remote_host = remote_host_;
  r->remote_port = remote_port_;
  r->local_host = local_host_;
  r->local_port = local_port_;
  slots_[slot_] = std::move(r);
  return slots_[slot_].get();
}

void connection::read_request() {
  reader_.reset(free_slot());
  fail_writes();
  body_pending_.clear();
  continue_sent_ = false;
  metadata_since_ = clock::time_point::max();
  if (buffer_.size() > 0) {
    phase_ = phase::header;
    deadline_ = clock::now() + opts_.header_timeout;
    return parse_head();
  }
  if (stopping_) return close();
  phase_ = phase::idle;
  // A new connection gets the header timeout for its first request; later
  // ones may idle for the keep-alive timeout.
  deadline_ = clock::now() + (served_ == 0 ? opts_.header_timeout : opts_.keepalive_timeout);
  socket().async_read_some(buffer_.prepare(read_chunk),
                           [self = self()](error_code ec, std::size_t n) { self->on_read(ec, n); });
}

void connection::on_read(error_code ec, std::size_t n) {
  if (closed()) return;
  if (ec) {
    if (phase_ == phase::header && buffer_.size() > 0 && ec == asio::error::eof)
      debug(logger, "closed in the middle of a request head");
    return close();
  }
  buffer_.commit(n);
  if (phase_ == phase::idle) {
    phase_ = phase::header;
    // The stop grace of a connection's first request still holds.
    deadline_ = std::min(stopping_ ? deadline_ : clock::time_point::max(), clock::now() + opts_.header_timeout);
  }
  parse_head();
}

void connection::parse_head() {
  switch (reader_.read_head(buffer_)) {
    case request_reader::result::need_more:
      socket().async_read_some(buffer_.prepare(read_chunk),
                               [self = self()](error_code ec, std::size_t n) { self->on_read(ec, n); });
      return;
    case request_reader::result::head:
      return on_head();
    default:
      return fail_request(reader_.status(), reader_.why());
  }
}

void connection::on_head() {
  const auto& h = reader_.head();
  writer_.begin(h.version, h.is_head(), reader_.keep_alive());
  phase_ = phase::prebody;
  bool small = h.chunked || (h.content_length && *h.content_length <= opts_.body_preread);
  if (!reader_.done() && !reader_.expect_continue() && small && opts_.body_preread > 0) {
    fill_body(opts_.body_preread, [self = self()](error_code ec) {
      if (ec) {
        if (ec == bhttp::error::partial_message || ec == asio::error::eof || ec == asio::error::operation_aborted)
          return self->close();
        return self->fail_request(reject_status(ec), self->reader_.why());
      }
      self->dispatch();
    });
    return;
  }
  dispatch();
}

void connection::dispatch() {
  const request& r = reader_.head();
  if (!r.trace_id.empty()) trace_id_ = r.trace_id;
  if (opts_.access_log) {
    started_ = clock::now();
    access_line_ = r.method + " " + r.target;
  }
  // Load shedding: a request the app could only queue behind
  // max_pending_requests others is refused at once (each exchange counts
  // down when it ends).
  if (!admit()) return fail_request(503, "too many pending requests (max_pending_requests)");
  phase_ = phase::app;
  deadline_ = clock::time_point::max();
  auto ex = std::make_shared<exchange_impl>(self(), slots_[slot_], request_id_);
  log::scoped_trace trace(trace_id_);
  try {
    app_.handle(ex);
  } catch (const std::exception& e) {
    log::write(log::level::error, logger, std::string("HTTP app failed: ") + e.what());
    ex->abort();
  } catch (...) {
    log::write(log::level::error, logger, "HTTP app failed with a non-standard exception");
    ex->abort();
  }
}

void connection::fail_request(unsigned status, std::string_view why) {
  if (log::enabled(log::level::debug))
    log::write(log::level::debug, logger,
               "rejected request from " + peer_ + ": " + std::to_string(status) + " " + std::string(why));
  phase_ = phase::app;
  fail_writes();
  // A rejected head has no writer state yet; a refused request (503) has.
  if (!reader_.head_done()) writer_.begin(11, false, false);
  push_write(response_writer::stock_reply(status), nullptr);
  if (!writing_) next_write();
}

// -------------------------------------------------------------------- body

error_code connection::parse_body(std::size_t want) {
  while (body_pending_.size() < want && !reader_.done()) {
    std::size_t old = body_pending_.size(), n = 0;
    body_pending_.resize(want);
    auto r = reader_.read_body(buffer_, &body_pending_[old], want - old, n);
    body_pending_.resize(old + n);
    if (r == request_reader::result::reject) return read_error(reader_.status());
    if (r == request_reader::result::need_more || r == request_reader::result::done) break;
  }
  if (reader_.in_metadata()) {
    if (metadata_since_ == clock::time_point::max()) metadata_since_ = clock::now();
  } else {
    metadata_since_ = clock::time_point::max();
  }
  return {};
}

void connection::fill_body(std::size_t want, std::function<void(error_code)> done) {
  auto ec = parse_body(want);
  if (ec || reader_.done() || body_pending_.size() >= want) return done(ec);
  // One read may take io_timeout; a chunk-size line or trailer section
  // must arrive whole within header_timeout, however slowly it trickles.
  deadline_ = std::min(clock::now() + opts_.io_timeout, metadata_since_ == clock::time_point::max()
                                                            ? clock::time_point::max()
                                                            : metadata_since_ + opts_.header_timeout);
  socket().async_read_some(buffer_.prepare(read_chunk),
                           [self = self(), want, done = std::move(done)](error_code e, std::size_t n) mutable {
                             if (self->phase_ == phase::app) self->deadline_ = clock::time_point::max();
                             if (self->closed()) return done(asio::error::operation_aborted);
                             if (e) return done(e == asio::error::eof ? error_code(bhttp::error::partial_message) : e);
                             self->buffer_.commit(n);
                             self->fill_body(want, std::move(done));
                           });
}

void connection::app_read(std::uint64_t id, std::size_t max, read_handler h) {
  if (id != request_id_ || phase_ != phase::app || closed()) return h(asio::error::operation_aborted, {});
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
  if (reader_.done()) return h({}, {});
  auto fill = [self = self(), id, max, h = std::move(h)]() mutable {
    self->fill_body(std::min(max, read_chunk), [self, id, max, h = std::move(h)](error_code ec) mutable {
      if (ec) return h(ec, {});  // the body cannot be read whole: writer_ closes after the response
      self->app_read(id, max, std::move(h));
    });
  };
  if (reader_.expect_continue() && !continue_sent_ && !writer_.head_sent() && !writing_) {
    continue_sent_ = true;
    writing_ = true;
    deadline_ = clock::now() + opts_.io_timeout;
    static const char interim[] = "HTTP/1.1 100 Continue\r\n\r\n";
    asio::async_write(socket(), asio::buffer(interim, sizeof interim - 1),
                      [self = self(), fill = std::move(fill)](error_code ec, std::size_t) mutable {
                        self->writing_ = false;
                        if (ec)
                          self->close();
                        else
                          self->next_write();
                        fill();  // after close() this reports operation_aborted
                      });
    return;
  }
  fill();
}

// ---------------------------------------------------------------- response

void connection::app_write(std::uint64_t id, pending_write&& w) {
  if (id != request_id_ || phase_ != phase::app || closed()) {
    if (w.done) w.done(asio::error::operation_aborted);
    return;
  }
  if (!writing_ && !has_write()) {
    // Nothing ahead of it: straight to the socket, never queued.
    current_ = std::move(w);
    return start_write();
  }
  writes_.push_back(std::move(w));
  if (!writing_) next_write();
}

void connection::app_abort(std::uint64_t id, const char* why) {
  if (id != request_id_ || phase_ != phase::app || closed()) return;
  if (why) log::write(log::level::error, logger, why);
  if (writer_.head_sent() || writing_) return close();
  // Nothing was sent yet: the client gets a 500, not a dropped connection.
  fail_writes();
  push_write(response_writer::stock_reply(500), nullptr);
  next_write();
}

void connection::fail_writes() {
  if (has_current_ && !writing_) {
    write_handler done = release_current();
    if (done) done(asio::error::operation_aborted);
  }
  if (!has_write()) {
    writes_.clear();
    write_at_ = 0;
    return;
  }
  auto writes = std::move(writes_);
  std::size_t at = write_at_;
  writes_.clear();
  write_at_ = 0;
  for (std::size_t i = at; i < writes.size(); ++i)
    if (writes[i].done) writes[i].done(asio::error::operation_aborted);
}

void connection::next_write() {
  if (!has_write() || writing_ || closed()) return;
  current_ = std::move(front_write());
  pop_write();
  start_write();
}

void connection::start_write() {
  has_current_ = writing_ = true;
  deadline_ = clock::now() + opts_.io_timeout;
  if (current_.file_fd >= 0)
    write_file(current_);
  else
    write_part(current_);
}

write_handler connection::release_current() {
  has_current_ = false;
  write_handler done = std::move(current_.done);
  current_.done = nullptr;
  // What the part owns goes now, not when the next write replaces it.
  current_.part.head.reset();
  current_.part.body = std::string();
  current_.part.body_ref = {};
  current_.file_fd = -1;
  return done;
}

void connection::write_part(pending_write& w) {
  if (!frame_part(w)) return;
  std::array<asio::const_buffer, 3> bufs{asio::buffer(writer_.head().data(), writer_.head().size()),
                                         asio::buffer(writer_.body().data(), writer_.body().size()),
                                         asio::buffer(writer_.tail().data(), writer_.tail().size())};
  // Most responses fit in the socket's send buffer: written here at once
  // (the socket is non-blocking), with no operation for the reactor and no
  // completion to schedule. Nested calls (a queue of writes, each finishing
  // at once) go the asynchronous way, so the stack stays shallow.
  if (sync_depth_ < 4) {
    std::array<iovec, 3> iov{};
    std::size_t total = 0, count = 0;
    for (const auto& b : bufs)
      if (b.size() > 0) {
        iov[count++] = iovec{const_cast<void*>(b.data()), b.size()};
        total += b.size();
      }
    msghdr msg{};
    msg.msg_iov = iov.data();
    msg.msg_iovlen = count;
    ssize_t n;
    do n = ::sendmsg(socket().native_handle(), &msg, MSG_NOSIGNAL);
    while (n < 0 && errno == EINTR);
    if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)
      return on_written(error_code(errno, boost::system::system_category()));
    std::size_t sent = n > 0 ? static_cast<std::size_t>(n) : 0;
    if (sent == total) {
      ++sync_depth_;
      on_written({});
      --sync_depth_;
      return;
    }
    for (auto& b : bufs) {  // the rest goes out asynchronously
      std::size_t k = std::min(sent, b.size());
      b += k;
      sent -= k;
    }
  }
  asio::async_write(socket(), bufs, [self = self()](error_code ec, std::size_t) { self->on_written(ec); });
}

bool connection::frame_part(pending_write& w) {
  log::scoped_trace trace(trace_id_);
  // A body the app has not read (yet) makes the connection unusable after
  // this response unless the app reads it all: announce the close now.
  switch (writer_.frame(w.part, stopping_ || !reader_.done())) {
    case response_writer::outcome::ok:
      if (!writer_.why().empty()) log::write(log::level::warning, logger, std::string(writer_.why()));
      break;
    case response_writer::outcome::replaced:
      log::write(log::level::error, logger, std::string(writer_.why()));
      break;
    case response_writer::outcome::refused:
      log::write(log::level::error, logger, std::string(writer_.why()));
      writing_ = false;
      if (!writer_.head_sent()) {
        // Body bytes before any head: answer 500 in its place.
        write_handler done = release_current();
        if (done) done(asio::error::operation_aborted);
        fail_writes();
        push_write(response_writer::stock_reply(500), nullptr);
        next_write();
        return false;
      }
      close();
      return false;
  }
  return true;
}

void connection::write_file(pending_write& w) {
  auto allowed = writer_.head_sent() ? writer_.file_allowance(w.file_count) : std::nullopt;
  if (!allowed) return on_written(asio::error::operation_not_supported);
  std::uint64_t limit = *allowed;
  while (limit > 0) {
    off_t off = static_cast<off_t>(w.file_offset);
    std::size_t want = static_cast<std::size_t>(std::min<std::uint64_t>(limit, 1 << 30));
    ssize_t n = ::sendfile(socket().native_handle(), w.file_fd, &off, want);
    if (n > 0) {
      w.file_offset += static_cast<std::uint64_t>(n);
      w.file_count -= static_cast<std::uint64_t>(n);
      limit -= static_cast<std::uint64_t>(n);
      writer_.account(static_cast<std::uint64_t>(n));
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
  socket().async_wait(asio::socket_base::wait_write, [self = self()](error_code ec) {
    if (ec || self->closed()) return self->on_written(ec ? ec : asio::error::operation_aborted);
    self->write_file(self->current_);
  });
}

void connection::on_written(error_code ec) {
  writing_ = false;
  if (!has_current_) return;  // close() already failed everything
  write_handler done = release_current();
  if (phase_ == phase::app) deadline_ = clock::time_point::max();
  if (ec || closed()) {
    close();
    if (done) done(ec ? ec : error_code(asio::error::operation_aborted));
    fail_writes();
    return;
  }
  bool last = writer_.finished();
  if (done) done({});
  if (last)
    finish_request();
  else
    next_write();
}

void connection::write_access_log() {
  char fields[48];
  std::snprintf(fields, sizeof fields, "%u %llu", writer_.status(), static_cast<unsigned long long>(writer_.body_bytes()));
  log_access(remote_host_, access_line_, fields, started_, trace_id_);
}

void connection::finish_request() {
  if (opts_.access_log && !access_line_.empty()) write_access_log();
  access_line_.clear();
  trace_id_ = "-";
  ++request_id_;
  bool reusable = writer_.keep_alive() && !stopping_ && reader_.done();
  if (!reusable) {
    // Nothing after this response reaches the app, pipelined requests
    // included. Linger only when the client may still be sending (an
    // unread body or more pipelined requests); otherwise close at once.
    if (reader_.done() && buffer_.size() == 0) {
      error_code ec;
      socket().shutdown(asio::socket_base::shutdown_send, ec);
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
  socket().shutdown(asio::socket_base::shutdown_send, ec);
  if (ec) return close();
  phase_ = phase::linger;
  buffer_.clear();
  deadline_ = clock::now() + linger_time;
  auto drain = std::make_shared<std::function<void()>>();
  *drain = [self = self(), drain]() {
    if (self->closed()) {
      *drain = nullptr;
      return;
    }
    self->buffer_.clear();
    self->socket().async_read_some(self->buffer_.prepare(read_chunk), [self, drain](error_code e, std::size_t) {
      if (e || self->closed()) {
        *drain = nullptr;  // break the cycle
        return self->close();
      }
      (*drain)();
    });
  };
  (*drain)();
}

void connection::on_close() {
  if (!writing_) fail_writes();
}

}  // namespace baseplate::http
