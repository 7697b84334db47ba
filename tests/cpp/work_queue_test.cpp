#include "work_queue.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <thread>
#include <vector>

using baseplate::work_queue;

TEST(work_queue, delivers_in_order_to_one_worker) {
  work_queue<int> q;
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(q.push(i));
  std::vector<int> got;
  bool finished = false;
  while (auto v = q.try_pop(finished)) {
    got.push_back(*v);
    finished = true;
  }
  EXPECT_EQ(got, (std::vector<int>{0, 1, 2, 3, 4}));
}

TEST(work_queue, close_releases_waiters_and_refuses_pushes) {
  work_queue<int> q;
  std::thread t([&] { EXPECT_FALSE(q.pop_wait().has_value()); });
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  q.close();
  t.join();
  EXPECT_FALSE(q.push(1));
}

TEST(work_queue, a_blocked_worker_does_not_stall_the_queue) {
  // Worker A takes item 0 and blocks until item 1 has been run by someone
  // else: only the stall watchdog can wake worker B for it.
  work_queue<int> q(std::chrono::milliseconds(2));
  std::atomic<bool> second_done{false};
  auto worker = [&] {
    bool finished = false;
    for (;;) {
      auto v = q.try_pop(finished);
      if (!v) v = q.pop_wait();
      if (!v) return;
      finished = true;
      if (*v == 0) {
        while (!second_done) std::this_thread::sleep_for(std::chrono::milliseconds(1));
      } else {
        second_done = true;
      }
    }
  };
  std::thread a(worker), b(worker);
  std::this_thread::sleep_for(std::chrono::milliseconds(20));  // both asleep
  q.push(0);
  std::this_thread::sleep_for(std::chrono::milliseconds(20));  // A is blocked on item 0
  q.push(1);
  for (int i = 0; i < 5000 && !second_done; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  EXPECT_TRUE(second_done.load());
  q.close();
  a.join();
  b.join();
}

TEST(work_queue, wakes_no_one_while_a_worker_runs) {
  work_queue<int> q(std::chrono::seconds(10));  // the watchdog stays out of it
  std::atomic<bool> release{false};
  std::atomic<int> taken_by[2] = {0, 0};
  auto worker = [&](int me) {
    bool finished = false;
    for (;;) {
      auto v = q.try_pop(finished);
      if (!v) v = q.pop_wait();
      if (!v) return;
      finished = true;
      ++taken_by[me];
      while (!release) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  };
  std::thread a(worker, 0), b(worker, 1);
  std::this_thread::sleep_for(std::chrono::milliseconds(20));  // both asleep
  q.push(0);  // nobody runs: one worker is woken
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  q.push(1);  // one worker runs: nobody is woken, item 1 waits for it
  q.push(2);
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_EQ(q.sizes().first, 2u);
  EXPECT_EQ(taken_by[0] + taken_by[1], 1);
  release = true;
  for (int i = 0; i < 2000 && q.sizes().first > 0; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  EXPECT_EQ(q.sizes().first, 0u);
  // The running worker took the rest itself.
  EXPECT_TRUE((taken_by[0] == 3 && taken_by[1] == 0) || (taken_by[0] == 0 && taken_by[1] == 3));
  q.close();
  a.join();
  b.join();
}

TEST(work_queue, an_event_loop_queue_starts_no_watchdog) {
  work_queue<int> with;
  EXPECT_TRUE(with.has_watchdog());
  work_queue<int> without(std::nullopt);
  EXPECT_FALSE(without.has_watchdog());
  // It still hands items over, through the armed event fd.
  ASSERT_TRUE(without.push(7));
  auto v = without.try_pop_or_arm(-1);
  ASSERT_TRUE(v.has_value());
  EXPECT_EQ(*v, 7);
  EXPECT_FALSE(without.try_pop_or_arm(-1).has_value());
}
