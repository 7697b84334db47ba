#pragma once
/// One Thrift connection: finds each message in the byte stream, decodes it
/// with the connection's codec, hands it to the app, and writes the reply in
/// the client's framing. Calls on one connection are answered in order.
#include "../stream_connection.hpp"
#include "call.hpp"
#include "codec.hpp"

#include <boost/beast/core/flat_buffer.hpp>

#include <memory>
#include <string>

namespace baseplate {
class io_thread;
}

namespace baseplate::thrift {

class connection final : public stream_connection {
 public:
  connection(socket_type socket, io_thread& thread, handler& app, const server_options& opts);
  ~connection() override;

  void start() override;

 private:
  class call_impl;
  friend class call_impl;

  enum class phase { idle, reading, app, writing, closed };

  std::shared_ptr<connection> self() { return std::static_pointer_cast<connection>(shared_from_this()); }
  bool idle() const override { return phase_ == phase::idle; }
  void on_close() override { phase_ = phase::closed; }
  void next_message();
  void read_more();
  /// Answers the current call with a TApplicationException: max_pending_requests.
  void shed();
  void on_reply(std::uint64_t id, std::string payload, headers_map headers, bool zlib);
  void on_fail(std::uint64_t id);
  void finish_call();
  void reject(const std::string& why);

  handler& app_;
  codec codec_;
  boost::beast::flat_buffer buffer_;
  std::string out_;
  std::size_t message_size_ = 0;  ///< bytes of the message being served
  std::uint64_t call_id_ = 0;
  phase phase_ = phase::idle;
  std::string trace_id_ = "-";   ///< of the current call, for native records
  std::string method_;           ///< of the current call (access log)
  clock::time_point started_;    ///< of the current call (access log)
};

}  // namespace baseplate::thrift
