// thrift_load: a Thrift load generator for the echo example (examples/thrift_echo).
//
//   thrift_load HOST PORT [KIND] [CONNECTIONS] [SECONDS] [RATE]
//
// KIND: framed_binary (default), header (THeader, binary inside),
// header_compact, buffered_binary or framed_compact. CONNECTIONS threads
// (default 50), each with one blocking libthrift client on its own
// connection, call Echo.echo("ping") for SECONDS (default 5).
// RATE (total calls/s over all connections): 0 or absent = closed loop, each
// thread calls back to back and a latency is measured from the call's start.
// RATE > 0 = open loop: each thread schedules its calls every
// CONNECTIONS/RATE seconds (threads staggered over one interval), sleeps
// until the scheduled time, and measures each latency from the *scheduled*
// start (coordinated-omission corrected): a thread that falls behind calls at
// once, and the time it waited shows in the latency, so a stalled server
// shows in p99.
// Every thread keeps its own latencies; they are merged at the end into one
// JSON line on stdout:
//   {"kind":..., "connections":..., "seconds":..., "rate":..., "calls":...,
//    "calls_per_s":..., "p50_us":..., "p99_us":..., "errors":...}
// A call that throws or returns the wrong string is an error; after a
// transport error the thread reconnects. Socket timeouts (10 s) bound a
// stuck call, so a run ends at most that long after SECONDS.
#include "Echo.h"

#include <thrift/TOutput.h>
#include <thrift/protocol/TBinaryProtocol.h>
#include <thrift/protocol/TCompactProtocol.h>
#include <thrift/protocol/THeaderProtocol.h>
#include <thrift/transport/TBufferTransports.h>
#include <thrift/transport/TSocket.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

namespace {

using apache::thrift::protocol::TBinaryProtocol;
using apache::thrift::protocol::TCompactProtocol;
using apache::thrift::protocol::THeaderProtocol;
using apache::thrift::protocol::TProtocol;
using apache::thrift::transport::TBufferedTransport;
using apache::thrift::transport::TFramedTransport;
using apache::thrift::transport::TSocket;
using apache::thrift::transport::TTransport;
using clock_type = std::chrono::steady_clock;

const char* const kKinds[] = {"framed_binary", "header", "header_compact", "buffered_binary", "framed_compact"};

struct connection {
  std::shared_ptr<TTransport> transport;
  std::unique_ptr<echo::EchoClient> client;
};

connection connect(const std::string& host, int port, const std::string& kind) {
  auto socket = std::make_shared<TSocket>(host, port);
  socket->setConnTimeout(10000);
  socket->setRecvTimeout(10000);
  socket->setSendTimeout(10000);
  socket->setNoDelay(true);
  connection c;
  std::shared_ptr<TProtocol> protocol;
  if (kind == "framed_binary") {
    c.transport = std::make_shared<TFramedTransport>(socket);
    protocol = std::make_shared<TBinaryProtocol>(c.transport);
  } else if (kind == "buffered_binary") {
    c.transport = std::make_shared<TBufferedTransport>(socket);
    protocol = std::make_shared<TBinaryProtocol>(c.transport);
  } else if (kind == "framed_compact") {
    c.transport = std::make_shared<TFramedTransport>(socket);
    protocol = std::make_shared<TCompactProtocol>(c.transport);
  } else {  // header, header_compact
    auto header = std::make_shared<THeaderProtocol>(
        socket, kind == "header" ? apache::thrift::protocol::T_BINARY_PROTOCOL
                                 : apache::thrift::protocol::T_COMPACT_PROTOCOL);
    c.transport = header->getTransport();
    protocol = header;
  }
  c.transport->open();
  c.client = std::make_unique<echo::EchoClient>(protocol);
  return c;
}

void close_quietly(connection& c) {
  try {
    if (c.transport) c.transport->close();
  } catch (...) {
  }
  c.client.reset();
  c.transport.reset();
}

struct worker_result {
  std::vector<std::uint32_t> latencies_us;
  std::uint64_t errors = 0;
};

void quiet_output(const char*) {}

int usage() {
  std::cerr << "usage: thrift_load HOST PORT [framed_binary|header|header_compact|buffered_binary|framed_compact]"
               " [CONNECTIONS] [SECONDS] [RATE]\n";
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3 || argc > 7) return usage();
  const std::string host = argv[1];
  const int port = std::atoi(argv[2]);
  const std::string kind = argc > 3 ? argv[3] : "framed_binary";
  const int connections = argc > 4 ? std::atoi(argv[4]) : 50;
  const double seconds = argc > 5 ? std::atof(argv[5]) : 5.0;
  const double rate = argc > 6 ? std::atof(argv[6]) : 0.0;
  if (port <= 0 || port > 65535 || connections <= 0 || connections > 10000 || !(seconds > 0 && seconds <= 3600) ||
      !(rate >= 0))
    return usage();
  // With a RATE, each thread calls every `interval`; thread i starts i/CONNECTIONS of an interval late.
  const auto interval = std::chrono::duration_cast<clock_type::duration>(
      std::chrono::duration<double>(rate > 0 ? connections / rate : 0.0));
  if (std::find(std::begin(kKinds), std::end(kKinds), kind) == std::end(kKinds)) return usage();
  apache::thrift::GlobalOutput.setOutputFunction(quiet_output);  // errors are counted, not printed

  const std::string message = "ping";
  std::vector<worker_result> results(static_cast<std::size_t>(connections));
  std::vector<std::thread> threads;
  std::atomic<int> ready{0};
  std::atomic<bool> go{false};
  clock_type::time_point start, stop;

  for (int i = 0; i < connections; ++i) {
    threads.emplace_back([&, i] {
      worker_result& r = results[static_cast<std::size_t>(i)];
      r.latencies_us.reserve(1 << 16);
      connection c;
      try {
        c = connect(host, port, kind);
      } catch (const std::exception&) {
        ++r.errors;
      }
      ++ready;
      while (!go.load(std::memory_order_acquire)) std::this_thread::yield();
      std::string result;
      auto scheduled = start + interval * i / connections;  // used only with a RATE
      while (clock_type::now() < stop && scheduled < stop) {
        if (!c.client) {
          try {
            c = connect(host, port, kind);
          } catch (const std::exception&) {
            ++r.errors;
            close_quietly(c);
            std::this_thread::sleep_for(std::chrono::milliseconds(10));
            continue;
          }
        }
        auto t0 = clock_type::now();
        if (rate > 0) {
          std::this_thread::sleep_until(scheduled);  // returns at once if behind
          t0 = scheduled;
          scheduled += interval;
        }
        try {
          c.client->echo(result, message);
        } catch (const std::exception&) {
          ++r.errors;
          close_quietly(c);
          continue;
        }
        auto t1 = clock_type::now();
        if (result != message) {
          ++r.errors;
          continue;
        }
        r.latencies_us.push_back(static_cast<std::uint32_t>(
            std::chrono::duration_cast<std::chrono::microseconds>(t1 - t0).count()));
      }
      close_quietly(c);
    });
  }
  while (ready.load() < connections) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  start = clock_type::now();
  stop = start + std::chrono::duration_cast<clock_type::duration>(std::chrono::duration<double>(seconds));
  go.store(true, std::memory_order_release);  // publishes start and stop to the threads
  for (auto& t : threads) t.join();
  const double elapsed = std::chrono::duration<double>(clock_type::now() - start).count();

  std::vector<std::uint32_t> all;
  std::uint64_t errors = 0;
  for (auto& r : results) {
    all.insert(all.end(), r.latencies_us.begin(), r.latencies_us.end());
    errors += r.errors;
  }
  auto percentile = [&all](double p) -> std::uint32_t {
    if (all.empty()) return 0;
    auto k = static_cast<std::size_t>(p * static_cast<double>(all.size() - 1) + 0.5);
    std::nth_element(all.begin(), all.begin() + static_cast<std::ptrdiff_t>(k), all.end());
    return all[k];
  };
  const std::uint32_t p50 = percentile(0.50);
  const std::uint32_t p99 = percentile(0.99);
  std::printf(
      "{\"kind\": \"%s\", \"connections\": %d, \"seconds\": %.3f, \"rate\": %.1f, \"calls\": %zu, "
      "\"calls_per_s\": %.1f, \"p50_us\": %u, \"p99_us\": %u, \"errors\": %llu}\n",
      kind.c_str(), connections, elapsed, rate, all.size(), static_cast<double>(all.size()) / elapsed, p50, p99,
      static_cast<unsigned long long>(errors));
  return all.empty() ? 1 : 0;
}
