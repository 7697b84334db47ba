#pragma once
/// Blocks a Python worker thread until the I/O thread completes one
/// operation. The caller releases the GIL around wait(); the I/O thread
/// never touches Python.
#include <boost/system/error_code.hpp>

#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>

namespace baseplate::python {

class waiter {
 public:
  void reset() {
    std::lock_guard<std::mutex> lk(m_);
    done_ = false;
    ec_ = {};
    data_.clear();
  }
  /// Called on the I/O thread.
  void complete(boost::system::error_code ec, std::string_view data = {}) {
    {
      std::lock_guard<std::mutex> lk(m_);
      ec_ = ec;
      data_.assign(data.data(), data.size());
      done_ = true;
    }
    cv_.notify_one();
  }
  /// Waits for complete(); call without the GIL.
  boost::system::error_code wait() {
    std::unique_lock<std::mutex> lk(m_);
    cv_.wait(lk, [this] { return done_; });
    return ec_;
  }
  std::string& data() { return data_; }

 private:
  std::mutex m_;
  std::condition_variable cv_;
  bool done_ = false;
  boost::system::error_code ec_;
  std::string data_;
};

}  // namespace baseplate::python
