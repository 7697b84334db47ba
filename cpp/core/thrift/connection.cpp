#include "connection.hpp"

#include "../io_thread.hpp"
#include "../log.hpp"
#include "../trace.hpp"

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/write.hpp>

#include <thrift/protocol/TBinaryProtocol.h>
#include <thrift/protocol/TCompactProtocol.h>
#include <thrift/transport/THeaderTransport.h>
#include <thrift/transport/TBufferTransports.h>

namespace baseplate::thrift {
namespace asio = boost::asio;
using boost::system::error_code;

namespace {
constexpr const char* logger = "baseplate_serve.thrift";
constexpr std::size_t read_chunk = 64 * 1024;

}  // namespace

/// The app's handle on one call; every call is posted to the connection's
/// thread, and calls for a call that has ended are ignored.
class connection::call_impl final : public call {
 public:
  call_impl(std::shared_ptr<connection> c, std::uint64_t id)
      : conn_(std::move(c)),
        id_(id),
        payload_(conn_->codec_.payload()),
        headers_(conn_->codec_.headers()),
        protocol_id_(conn_->codec_.protocol_id()),
        type_(conn_->codec_.type()) {}
  ~call_impl() override {
    conn_->pending_->fetch_sub(1, std::memory_order_relaxed);
    if (!done_) conn_->post([c = conn_, id = id_] { c->on_fail(id); });
  }

  std::string_view payload() const override { return payload_; }
  const headers_map& headers() const override { return headers_; }
  int protocol_id() const override { return protocol_id_; }
  client_type type() const override { return type_; }
  const std::string& peer() const override { return conn_->peer_; }

  void reply(std::string payload, headers_map headers, bool zlib) override {
    done_ = true;
    conn_->post([c = conn_, id = id_, p = std::move(payload), h = std::move(headers), zlib]() mutable {
                 c->on_reply(id, std::move(p), std::move(h), zlib);
               });
  }
  void fail() override {
    done_ = true;
    conn_->post([c = conn_, id = id_] { c->on_fail(id); });
  }

 private:
  std::shared_ptr<connection> conn_;
  std::uint64_t id_;
  std::string payload_;  ///< a copy: the connection's buffer moves on
  headers_map headers_;
  int protocol_id_;
  client_type type_;
  bool done_ = false;
};

connection::connection(socket_type socket, io_thread& thread, handler& app, const server_options& opts)
    : stream_connection(std::move(socket), thread, opts), app_(app), codec_(opts.max_frame_size) {}

connection::~connection() = default;

void connection::start() { next_message(); }

void connection::next_message() {
  if (phase_ == phase::closed) return;
  if (buffer_.size() == 0 && stopping_) return close();
  auto data = static_cast<const std::uint8_t*>(buffer_.data().data());
  auto bounds = find_message(data, buffer_.size(), opts_.max_frame_size);
  if (bounds.status == message_bounds::invalid) return reject(bounds.error);
  if (bounds.status == message_bounds::need_more) return read_more();
  message_size_ = bounds.size;
  try {
    codec_.decode(static_cast<std::uint8_t*>(buffer_.data().data()), bounds.size);
  } catch (const std::exception& e) {
    return reject(e.what());
  }
  if (codec_.payload().empty()) {
    // libthrift's C++ THeaderTransport sends an empty frame when it closes:
    // nothing to call, as in every THeader server.
    buffer_.consume(message_size_);
    message_size_ = 0;
    return next_message();
  }
  phase_ = phase::app;
  // Load shedding: see max_pending_requests (each call counts down when it ends).
  if (!admit()) return shed();
  deadline_ = clock::time_point::max();
  auto header = [&](const char* name) -> std::string_view {
    auto it = codec_.headers().find(name);
    return it == codec_.headers().end() ? std::string_view() : std::string_view(it->second);
  };
  auto tc = resolve_trace(header("Trace"), header("Span"), header("traceparent"));
  trace_id_ = tc.trace_id.empty() ? "-" : std::move(tc.trace_id);
  if (opts_.access_log) {
    method_ = codec_.method_name();
    started_ = clock::now();
  }
  log::scoped_trace scope(trace_id_);
  app_.handle(std::make_shared<call_impl>(self(), call_id_));
}

void connection::shed() {
  std::string reply;
  try {
    reply = exception_reply(codec_.payload(), codec_.protocol_id(),
                            "server overloaded: too many pending requests (max_pending_requests)");
  } catch (const std::exception& e) {
    return reject(e.what());
  }
  if (log::enabled(log::level::debug))
    log::write(log::level::debug, logger, "refused a Thrift call from " + peer_ + ": too many pending requests");
  on_reply(call_id_, std::move(reply), {}, false);
}

void connection::read_more() {
  bool idle = buffer_.size() == 0;
  phase_ = idle ? phase::idle : phase::reading;
  deadline_ = clock::now() + (idle ? opts_.keepalive_timeout : opts_.io_timeout);
  socket().async_read_some(buffer_.prepare(read_chunk), [self = self()](error_code ec, std::size_t n) {
    if (self->phase_ == phase::closed) return;
    if (ec) {
      if (self->buffer_.size() > 0 && ec == asio::error::eof)
        log::write(log::level::warning, logger,
                   "closing Thrift connection from " + self->peer_ + ": it closed in the middle of a message");
      return self->close();
    }
    self->buffer_.commit(n);
    self->next_message();
  });
}

void connection::on_reply(std::uint64_t id, std::string payload, headers_map headers, bool zlib) {
  if (id != call_id_ || phase_ != phase::app) return;
  if (payload.empty()) return finish_call();  // oneway: nothing goes back
  try {
    out_ = codec_.encode(payload, headers, zlib);
  } catch (const std::exception& e) {
    log::write(log::level::error, logger, std::string("could not encode a Thrift reply: ") + e.what());
    return close();
  }
  phase_ = phase::writing;
  deadline_ = clock::now() + opts_.io_timeout;
  asio::async_write(socket(), asio::buffer(out_), [self = self()](error_code ec, std::size_t) {
    if (self->phase_ == phase::closed) return;
    if (ec) return self->close();
    self->finish_call();
  });
}

void connection::on_fail(std::uint64_t id) {
  if (id == call_id_ && phase_ == phase::app) close();
}

void connection::finish_call() {
  if (opts_.access_log) {
    log_access(peer_, "THRIFT " + method_, std::to_string(out_.size()).c_str(), started_, trace_id_);
    out_.clear();
  }
  trace_id_ = "-";
  ++call_id_;
  buffer_.consume(message_size_);
  message_size_ = 0;
  next_message();
}

void connection::reject(const std::string& why) {
  log::write(log::level::warning, logger, "closing Thrift connection from " + peer_ + ": " + why);
  close();
}

}  // namespace baseplate::thrift
