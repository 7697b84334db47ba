#pragma once
/// Thrift framing: where a message ends in a byte stream, and the THeader,
/// framed and unframed encodings of requests and replies. Decoding and
/// encoding are Apache Thrift's own THeaderTransport; what it lacks is
/// written here and says so.
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>

namespace apache::thrift::transport {
class TMemoryBuffer;
}

namespace baseplate::thrift {

/// The encodings a client may use (values of libthrift's CLIENT_TYPE).
enum class client_type : int {
  header = 0,
  framed_binary = 1,
  unframed_binary = 2,
  framed_compact = 3,
  unframed_compact = 4,
};

const char* to_string(client_type t);

using headers_map = std::map<std::string, std::string>;

/// Where the first message in a buffer ends.
struct message_bounds {
  enum kind { need_more, complete, invalid } status = need_more;
  std::size_t size = 0;  ///< bytes of the whole message (frame included) when complete
  std::string error;     ///< why, when invalid
};

/// Finds the first message in `data`. Framed and THeader messages carry
/// their size; an unframed message is walked with libthrift's protocol
/// skip() to find its end. `max_frame`: the largest message accepted.
message_bounds find_message(const std::uint8_t* data, std::size_t size, std::size_t max_frame);

/// The reply that fails a call with a TApplicationException (INTERNAL_ERROR,
/// `message`) under the call's name and seqid, in its protocol (binary or
/// compact); empty for a oneway call. Throws when the call is undecodable.
std::string exception_reply(std::string_view payload, int protocol_id, const std::string& message);

/// Decodes the requests and encodes the replies of one connection. A reply
/// must go through the codec that read its request: the client type,
/// protocol, sequence id and transforms carry over, as in libthrift.
class codec {
 public:
  /// `max_frame`: the largest request, also after inflating a zlib one.
  explicit codec(std::size_t max_frame = 16 * 1024 * 1024);
  ~codec();
  codec(const codec&) = delete;
  codec& operator=(const codec&) = delete;

  /// Decodes one whole message (as delimited by find_message). Throws
  /// apache::thrift::TException on a malformed message.
  void decode(std::uint8_t* data, std::size_t size);

  /// The protocol-encoded message of the last request (headers and
  /// transforms removed); valid until the next decode.
  std::string_view payload() const { return payload_; }
  const headers_map& headers() const;
  /// T_BINARY_PROTOCOL (0) or T_COMPACT_PROTOCOL (2).
  int protocol_id() const;
  client_type type() const;
  /// The called method's name, read from the payload ("?" if unreadable).
  std::string method_name() const;

  /// Encodes a reply to the last request in the client's own framing,
  /// protocol and transforms, with `headers` as THeader info headers.
  /// `zlib`: compress a THeader reply even if the request was not.
  std::string encode(std::string_view payload, const headers_map& headers, bool zlib = false);

 private:
  class header_transport;
  std::shared_ptr<apache::thrift::transport::TMemoryBuffer> in_, out_;
  std::shared_ptr<header_transport> transport_;
  std::string_view payload_;
  std::string inflated_;      ///< a zlib request rewritten without its transform
  bool zlib_reply_ = false;  ///< the request came compressed: so goes the reply
  std::size_t max_frame_;
};

}  // namespace baseplate::thrift
