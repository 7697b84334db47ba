#include "stream_connection.hpp"

#include "io_thread.hpp"
#include "log.hpp"

#include <boost/asio/ip/address.hpp>
#include <boost/asio/post.hpp>

#include <netinet/in.h>
#include <sys/socket.h>

#include <cstdio>
#include <cstring>

#include <unistd.h>

namespace baseplate {
namespace asio = boost::asio;
using boost::system::error_code;

namespace {
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
}  // namespace

void post_gate::wake() {
  // Inside the loop's poll() the handler runs in this same poll: no wake-up.
  io_thread* t = io_thread::current();
  if (t && t->gate().get() == this) return;
  if (wake_pending_.exchange(true, std::memory_order_relaxed)) return;
  std::uint64_t one = 1;
  [[maybe_unused]] auto n = ::write(wake_fd_, &one, sizeof one);
}

void post_gate::close() {
  std::lock_guard<std::mutex> lk(mutex_);
  ctx_ = nullptr;
}

stream_connection::stream_connection(socket_type socket, io_thread& thread, const server_options& opts)
    : thread_(thread), opts_(opts), pending_(thread.pending_requests()), gate_(thread.gate()), socket_(std::move(socket)) {
  error_code ec;
  describe(socket_->remote_endpoint(ec), remote_host_, remote_port_);
  describe(socket_->local_endpoint(ec), local_host_, local_port_);
  if (remote_host_.empty())
    peer_ = "a local client";
  else if (remote_host_.find(':') != std::string::npos)
    peer_ = "[" + remote_host_ + "]:" + std::to_string(remote_port_);
  else
    peer_ = remote_host_ + ":" + std::to_string(remote_port_);
}

stream_connection::~stream_connection() = default;

bool stream_connection::admit() {
  if (pending_->fetch_add(1, std::memory_order_relaxed) >= opts_.max_pending_requests && opts_.max_pending_requests) {
    pending_->fetch_sub(1, std::memory_order_relaxed);
    return false;
  }
  ++served_;
  return true;
}

void stream_connection::debug(const char* logger, const std::string& why) const {
  if (log::enabled(log::level::debug)) log::write(log::level::debug, logger, "connection from " + peer_ + ": " + why);
}

void stream_connection::log_access(const std::string& who, const std::string& request, const char* fields,
                                   clock::time_point started, const std::string& trace_id) const {
  auto us = std::chrono::duration_cast<std::chrono::microseconds>(clock::now() - started).count();
  char tail[128];
  std::snprintf(tail, sizeof tail, "\" %s %.3fms", fields, static_cast<double>(us) / 1000.0);
  log::scoped_trace trace(trace_id);
  log::write(log::level::info, "baseplate_serve.access", who + " \"" + request + tail);
}

void stream_connection::shutdown() {
  stopping_ = true;
  if (closed() || !idle()) return;  // the protocol closes after the request in progress
  if (served_ == 0) {
    // Accepted before the stop: its first request may be on the wire.
    deadline_ = std::min(deadline_, clock::now() + stop_grace);
    return;
  }
  error_code ec;
  if (socket_->available(ec) > 0 && !ec) return;  // a request is waiting: read and serve it
  close();
}

void stream_connection::close() {
  if (closed()) return;
  auto keep = shared_from_this();
  error_code ec;
  socket_->close(ec);
  socket_.reset();
  on_close();
  thread_.remove(this);
}

void stream_connection::check_deadline(clock::time_point now) {
  if (!closed() && now >= deadline_) {
    debug("baseplate_serve.core", "timed out");
    close();
  }
}

}  // namespace baseplate
