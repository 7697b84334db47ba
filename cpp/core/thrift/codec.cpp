#include "codec.hpp"

#include <thrift/TApplicationException.h>
#include <thrift/protocol/TBinaryProtocol.h>
#include <thrift/protocol/TCompactProtocol.h>
#include <thrift/protocol/TProtocolException.h>
#include <thrift/transport/TBufferTransports.h>
#include <thrift/transport/THeaderTransport.h>
#include <thrift/transport/TTransportException.h>

#include <zlib.h>

#include <algorithm>
#include <climits>
#include <cstdint>
#include <memory>
#include <optional>
#include <type_traits>
#include <vector>

namespace baseplate::thrift {
namespace at = apache::thrift;
using at::transport::TMemoryBuffer;

const char* to_string(client_type t) {
  switch (t) {
    case client_type::header: return "THeader";
    case client_type::framed_binary: return "framed binary";
    case client_type::unframed_binary: return "unframed binary";
    case client_type::framed_compact: return "framed compact";
    case client_type::unframed_compact: return "unframed compact";
  }
  return "unknown";
}

namespace {

std::uint32_t be32(const std::uint8_t* p) {
  return (std::uint32_t(p[0]) << 24) | (std::uint32_t(p[1]) << 16) | (std::uint32_t(p[2]) << 8) | p[3];
}

bool is_binary_start(const std::uint8_t* p) { return p[0] == 0x80 && p[1] == 0x01; }
bool is_compact_start(const std::uint8_t* p) { return p[0] == 0x82 && (p[1] & 0x1f) == 1; }
bool is_header_start(const std::uint8_t* p) { return p[0] == 0x0f && p[1] == 0xff; }

/// A protocol that refuses strings and containers over `limit` elements.
template <class Protocol>
std::unique_ptr<Protocol> make_limited(std::shared_ptr<TMemoryBuffer> buf, std::int32_t limit) {
  if constexpr (std::is_same_v<Protocol, at::protocol::TCompactProtocol>)
    return std::make_unique<Protocol>(std::move(buf), limit, limit);
  else
    return std::make_unique<Protocol>(std::move(buf), limit, limit, false, true);
}

/// Walks one unframed message with the protocol's own skip().
template <class Protocol>
message_bounds walk_unframed(const std::uint8_t* data, std::size_t size, std::size_t max_frame) {
  message_bounds b;
  auto buf = std::make_shared<TMemoryBuffer>(const_cast<std::uint8_t*>(data), static_cast<std::uint32_t>(size));
  // A string or container longer than the largest message cannot be valid:
  // refuse it before the protocol allocates its declared size.
  auto limit = static_cast<std::int32_t>(std::min<std::size_t>(max_frame, INT32_MAX));
  auto proto = make_limited<Protocol>(buf, limit);
  try {
    std::string name;
    at::protocol::TMessageType type;
    std::int32_t seqid;
    proto->readMessageBegin(name, type, seqid);
    proto->skip(at::protocol::T_STRUCT);
    proto->readMessageEnd();
    b.size = size - buf->available_read();
    b.status = message_bounds::complete;
    if (b.size > max_frame) {
      b.status = message_bounds::invalid;
      b.error = "unframed message of " + std::to_string(b.size) + " bytes is over max_frame_size (" +
                std::to_string(max_frame) + " bytes)";
    }
  } catch (const at::transport::TTransportException& e) {
    if (e.getType() != at::transport::TTransportException::END_OF_FILE) {
      b.status = message_bounds::invalid;
      b.error = e.what();
    } else if (size > max_frame) {
      b.status = message_bounds::invalid;
      b.error = "unframed message over max_frame_size (" + std::to_string(max_frame) + " bytes)";
    }
  } catch (const at::protocol::TProtocolException& e) {
    b.status = message_bounds::invalid;
    b.error = e.getType() == at::protocol::TProtocolException::SIZE_LIMIT
                  ? "unframed message over max_frame_size (" + std::to_string(max_frame) + " bytes)"
                  : std::string(e.what());
  } catch (const at::TException& e) {
    b.status = message_bounds::invalid;
    b.error = e.what();
  }
  return b;
}

/// Reads a THeader varint (LEB128, at most 5 bytes) at `p`, bounded by `end`.
bool read_varint(const std::uint8_t*& p, const std::uint8_t* end, std::uint32_t& out) {
  out = 0;
  for (int shift = 0; shift < 35 && p < end; shift += 7) {
    std::uint8_t b = *p++;
    out |= std::uint32_t(b & 0x7f) << shift;
    if (!(b & 0x80)) return true;
  }
  return false;
}

void write_varint(std::string& out, std::uint32_t v) {
  while (v >= 0x80) {
    out.push_back(static_cast<char>((v & 0x7f) | 0x80));
    v >>= 7;
  }
  out.push_back(static_cast<char>(v));
}

void put_be32(std::string& out, std::size_t at, std::uint32_t v) {
  out[at] = static_cast<char>(v >> 24);
  out[at + 1] = static_cast<char>(v >> 16);
  out[at + 2] = static_cast<char>(v >> 8);
  out[at + 3] = static_cast<char>(v);
}

constexpr std::uint32_t zlib_transform = 0x01;

/// The zlib transform is written by hand because libthrift 0.17 gets it
/// wrong both ways: THeaderTransport::untransform inflates into a read
/// buffer sized for the compressed frame (a heap overflow under ASan), and
/// transform fails with "Error while zlib deflate" on a transport that has
/// read before. libthrift reads and writes frames without transforms; these
/// two functions rewrite a THeader frame from one form into the other.
struct header_frame {
  std::uint32_t protocol = 0;
  std::vector<std::uint32_t> transforms;
  const std::uint8_t* rest = nullptr;  ///< info headers and padding
  std::size_t rest_size = 0;
  const std::uint8_t* payload = nullptr;
  std::size_t payload_size = 0;
};

std::optional<header_frame> parse_header_frame(const std::uint8_t* data, std::size_t size) {
  if (size < 14 || data[4] != 0x0f || data[5] != 0xff) return std::nullopt;
  const std::size_t header_len = std::size_t((data[12] << 8) | data[13]) * 4;
  const std::uint8_t* end = data + 14 + header_len;
  if (end > data + size) return std::nullopt;  // libthrift reports it
  header_frame f;
  const std::uint8_t* p = data + 14;
  std::uint32_t count;
  if (!read_varint(p, end, f.protocol) || !read_varint(p, end, count) || count > 16) return std::nullopt;
  for (std::uint32_t i = 0; i < count; ++i) {
    std::uint32_t id;
    if (!read_varint(p, end, id)) return std::nullopt;
    f.transforms.push_back(id);
  }
  f.rest = p;
  f.rest_size = static_cast<std::size_t>(end - p);
  f.payload = end;
  f.payload_size = static_cast<std::size_t>(data + size - end);
  return f;
}

/// Builds a THeader frame: `prefix` holds the first 12 bytes (length,
/// magic, flags, sequence id) of the original.
std::string build_header_frame(const std::uint8_t* prefix, const header_frame& f,
                               const std::vector<std::uint32_t>& transforms, std::string_view payload) {
  std::string header;
  write_varint(header, f.protocol);
  write_varint(header, static_cast<std::uint32_t>(transforms.size()));
  for (auto t : transforms) write_varint(header, t);
  header.append(reinterpret_cast<const char*>(f.rest), f.rest_size);
  while (header.size() % 4) header.push_back('\0');
  std::string out(reinterpret_cast<const char*>(prefix), 12);
  out.push_back(static_cast<char>((header.size() / 4) >> 8));
  out.push_back(static_cast<char>((header.size() / 4) & 0xff));
  out += header;
  out.append(payload.data(), payload.size());
  put_be32(out, 0, static_cast<std::uint32_t>(out.size() - 4));
  return out;
}

[[noreturn]] void corrupt(const char* what) {
  throw at::transport::TTransportException(at::transport::TTransportException::CORRUPTED_DATA, what);
}

/// The info section of a THeader header, as libthrift reads it: info ids
/// until a 0 (padding); id 1 is key/value pairs, each a varint length and
/// bytes; an unknown id ends the section. Throws unless all fits.
void check_info_headers(const std::uint8_t* p, const std::uint8_t* end) {
  auto string_fits = [&]() {
    std::uint32_t len;
    if (!read_varint(p, end, len) || len > static_cast<std::uint32_t>(end - p)) return false;
    p += len;
    return true;
  };
  while (p < end) {
    std::uint32_t id;
    if (!read_varint(p, end, id)) corrupt("malformed THeader info headers");
    if (id != 1) return;  // 0: padding; others: libthrift stops reading
    std::uint32_t count;
    if (!read_varint(p, end, count)) corrupt("malformed THeader info headers");
    while (count-- && p < end)
      if (!string_fits() || !string_fits()) corrupt("malformed THeader info headers");
  }
}

std::string zlib_inflate(const std::uint8_t* data, std::size_t size, std::size_t limit) {
  z_stream z{};
  if (inflateInit(&z) != Z_OK) corrupt("zlib inflateInit failed");
  z.next_in = const_cast<Bytef*>(data);
  z.avail_in = static_cast<uInt>(size);
  std::string out;
  char chunk[16384];
  int rc = Z_OK;
  while (rc != Z_STREAM_END) {
    z.next_out = reinterpret_cast<Bytef*>(chunk);
    z.avail_out = sizeof chunk;
    rc = inflate(&z, Z_NO_FLUSH);
    bool stuck = rc == Z_BUF_ERROR || (rc == Z_OK && z.avail_in == 0 && z.avail_out != 0);
    if ((rc != Z_OK && rc != Z_STREAM_END) || stuck) {
      inflateEnd(&z);
      corrupt("invalid or truncated zlib data in a THeader frame");
    }
    out.append(chunk, sizeof chunk - z.avail_out);
    if (out.size() > limit) {
      inflateEnd(&z);
      corrupt("zlib frame inflates over max_frame_size");
    }
  }
  inflateEnd(&z);
  return out;
}

std::string zlib_deflate(std::string_view in) {
  uLongf bound = compressBound(static_cast<uLong>(in.size()));
  std::string out(bound, '\0');
  if (compress(reinterpret_cast<Bytef*>(out.data()), &bound, reinterpret_cast<const Bytef*>(in.data()),
               static_cast<uLong>(in.size())) != Z_OK)
    corrupt("zlib deflate failed");
  out.resize(bound);
  return out;
}

}  // namespace

message_bounds find_message(const std::uint8_t* data, std::size_t size, std::size_t max_frame) {
  message_bounds b;
  if (size < 4) return b;
  if (is_binary_start(data)) return walk_unframed<at::protocol::TBinaryProtocol>(data, size, max_frame);
  if (is_compact_start(data)) return walk_unframed<at::protocol::TCompactProtocol>(data, size, max_frame);
  std::uint32_t frame = be32(data);
  if (frame > max_frame) {
    b.status = message_bounds::invalid;
    b.error = "frame of " + std::to_string(frame) + " bytes is over max_frame_size (" + std::to_string(max_frame) +
              " bytes)";
    return b;
  }
  if (size >= 6 && !is_binary_start(data + 4) && !is_compact_start(data + 4) && !is_header_start(data + 4)) {
    b.status = message_bounds::invalid;
    b.error = "not a Thrift message (unknown client type)";
    return b;
  }
  if (frame < 4) {
    b.status = message_bounds::invalid;
    b.error = "frame of " + std::to_string(frame) + " bytes is too short";
    return b;
  }
  if (size < 4 + std::size_t(frame)) return b;
  b.status = message_bounds::complete;
  b.size = 4 + std::size_t(frame);
  return b;
}

/// libthrift's THeaderTransport with access to what it keeps protected:
/// the frame it just read, and its transform lists. It does not send the
/// request's transforms back on the reply by itself; mirror_transforms()
/// does, as the Python and Java implementations do.
class codec::header_transport final : public at::transport::THeaderTransport {
 public:
  header_transport(std::shared_ptr<at::transport::TTransport> in, std::shared_ptr<at::transport::TTransport> out)
      : THeaderTransport(std::move(in), std::move(out)) {}

  void next_frame() {
    if (!readFrame()) throw at::transport::TTransportException(at::transport::TTransportException::END_OF_FILE);
  }
  std::string_view frame() const {
    return {reinterpret_cast<const char*>(rBase_), static_cast<std::size_t>(rBound_ - rBase_)};
  }
  client_type type() const { return static_cast<client_type>(clientType); }

};

codec::codec(std::size_t max_frame)
    : in_(std::make_shared<TMemoryBuffer>()),
      out_(std::make_shared<TMemoryBuffer>()),
      transport_(std::make_shared<header_transport>(in_, out_)),
      max_frame_(max_frame) {}

codec::~codec() = default;

void codec::decode(std::uint8_t* data, std::size_t size) {
  zlib_reply_ = false;
  auto f = parse_header_frame(data, size);
  if (size >= 6 && data[4] == 0x0f && data[5] == 0xff) {
    // Everything libthrift would read of a THeader frame is checked here
    // first: it trusts the protocol id (a stack overflow writing the reply
    // with an id like 0xFFFF) and its zlib path overflows its heap.
    if (!f) corrupt("malformed THeader frame");
    if (f->protocol != at::protocol::T_BINARY_PROTOCOL && f->protocol != at::protocol::T_COMPACT_PROTOCOL)
      corrupt("unknown THeader protocol id");
    // libthrift 0.17 reads info-header strings past the header's end when
    // their lengths lie: every length is checked here first.
    check_info_headers(f->rest, f->rest + f->rest_size);
  }
  if (f && !f->transforms.empty()) {
    if (f->transforms != std::vector<std::uint32_t>{zlib_transform})
      corrupt("unsupported THeader transform (only zlib is)");
    std::string body = zlib_inflate(f->payload, f->payload_size, max_frame_);
    inflated_ = build_header_frame(data, *f, {}, body);
    data = reinterpret_cast<std::uint8_t*>(inflated_.data());
    size = inflated_.size();
    zlib_reply_ = true;
  }
  in_->resetBuffer(data, static_cast<std::uint32_t>(size), TMemoryBuffer::OBSERVE);
  transport_->next_frame();
  switch (transport_->type()) {
    case client_type::unframed_binary:
    case client_type::unframed_compact:
      // readFrame() buffered only the first word; the message is all of it.
      payload_ = {reinterpret_cast<const char*>(data), size};
      break;
    default:
      payload_ = transport_->frame();
  }
}

const headers_map& codec::headers() const { return transport_->getHeaders(); }
int codec::protocol_id() const { return transport_->getProtocolId(); }
client_type codec::type() const { return transport_->type(); }

std::string codec::method_name() const {
  auto buf = std::make_shared<TMemoryBuffer>(
      reinterpret_cast<std::uint8_t*>(const_cast<char*>(payload_.data())), static_cast<std::uint32_t>(payload_.size()));
  std::string name;
  at::protocol::TMessageType type;
  std::int32_t seqid;
  try {
    auto limit = static_cast<std::int32_t>(payload_.size());  // a name can't be longer than the message
    if (protocol_id() == at::protocol::T_COMPACT_PROTOCOL)
      make_limited<at::protocol::TCompactProtocol>(buf, limit)->readMessageBegin(name, type, seqid);
    else
      make_limited<at::protocol::TBinaryProtocol>(buf, limit)->readMessageBegin(name, type, seqid);
  } catch (const at::TException&) {
    return "?";
  }
  return name;
}

std::string codec::encode(std::string_view payload, const headers_map& headers, bool zlib) {
  out_->resetBuffer();
  transport_->clearHeaders();
  for (const auto& [k, v] : headers) transport_->setHeader(k, v);
  transport_->write(reinterpret_cast<const std::uint8_t*>(payload.data()), static_cast<std::uint32_t>(payload.size()));
  transport_->flush();
  std::string frame = out_->getBufferAsString();
  if (!(zlib_reply_ || (zlib && type() == client_type::header))) return frame;
  auto f = parse_header_frame(reinterpret_cast<const std::uint8_t*>(frame.data()), frame.size());
  if (!f) corrupt("libthrift wrote an unreadable THeader frame");
  std::string_view body(reinterpret_cast<const char*>(f->payload), f->payload_size);
  return build_header_frame(reinterpret_cast<const std::uint8_t*>(frame.data()), *f, {zlib_transform},
                            zlib_deflate(body));
}

std::string exception_reply(std::string_view payload, int protocol_id, const std::string& message) {
  using at::transport::TMemoryBuffer;
  auto in = std::make_shared<TMemoryBuffer>(reinterpret_cast<std::uint8_t*>(const_cast<char*>(payload.data())),
                                            static_cast<std::uint32_t>(payload.size()));
  auto out = std::make_shared<TMemoryBuffer>();
  auto limit = static_cast<std::int32_t>(payload.size());  // a name can't be longer than the message
  std::unique_ptr<at::protocol::TProtocol> reader, writer;
  if (protocol_id == at::protocol::T_COMPACT_PROTOCOL) {
    reader = std::make_unique<at::protocol::TCompactProtocol>(in, limit, limit);
    writer = std::make_unique<at::protocol::TCompactProtocol>(out);
  } else {
    reader = std::make_unique<at::protocol::TBinaryProtocol>(in, limit, limit, false, true);
    writer = std::make_unique<at::protocol::TBinaryProtocol>(out);
  }
  std::string name;
  at::protocol::TMessageType type;
  std::int32_t seqid;
  reader->readMessageBegin(name, type, seqid);
  if (type == at::protocol::T_ONEWAY) return {};
  at::TApplicationException x(at::TApplicationException::INTERNAL_ERROR, message);
  writer->writeMessageBegin(name, at::protocol::T_EXCEPTION, seqid);
  x.write(writer.get());
  writer->writeMessageEnd();
  return out->getBufferAsString();
}

}  // namespace baseplate::thrift
