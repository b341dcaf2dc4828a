// hiredis under the hooks, against a redis-server the suite starts for itself on a free
// loopback port: a BLPOP on a blocking redisContext parks only its greenlet (the others SET,
// GET and RPUSH meanwhile, and one of them pushes what the BLPOP waits for), many clients
// work at once, a time limit set with redisSetTimeout() (SO_RCVTIMEO) is honoured, and a
// refused connection is hiredis's error as usual.
#include <gtest/gtest.h>
#include <hiredis.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "child_process.hpp"
#include "tendril/monkey/monkey.hpp"
#include "tendril/tendril.hpp"

using namespace std::chrono_literals;
using tendril::spawn;

namespace {

struct reply_deleter {
  void operator()(redisReply* r) const { freeReplyObject(r); }
};
using reply_ptr = std::unique_ptr<redisReply, reply_deleter>;

struct context_deleter {
  void operator()(redisContext* c) const { redisFree(c); }
};
using context_ptr = std::unique_ptr<redisContext, context_deleter>;

// command() is redisCommand() with the reply owned.
template <class... Args>
reply_ptr command(redisContext* c, const char* format, Args... args) {
  return reply_ptr(static_cast<redisReply*>(redisCommand(c, format, args...)));
}

// A reply as text, for comparisons and messages: "(null)" if there was none.
std::string text(const redisReply* r) {
  if (r == nullptr) return "(null)";
  switch (r->type) {
    case REDIS_REPLY_STRING:
    case REDIS_REPLY_STATUS:
      return std::string(r->str, r->len);
    case REDIS_REPLY_ERROR:
      return "(error) " + std::string(r->str, r->len);
    case REDIS_REPLY_INTEGER:
      return std::to_string(r->integer);
    case REDIS_REPLY_NIL:
      return "(nil)";
    case REDIS_REPLY_ARRAY: {
      std::string s = "[";
      for (std::size_t i = 0; i < r->elements; ++i) s += (i ? "," : "") + text(r->element[i]);
      return s + "]";
    }
    default:
      return "(type " + std::to_string(r->type) + ")";
  }
}

class redis_hooked : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    tendril::monkey::patch_all();
    start_server();
  }

  static void start_server() {
    if (::access("/usr/bin/redis-server", X_OK) != 0 &&
        ::access("/usr/local/bin/redis-server", X_OK) != 0) {
      skip_ = "redis-server is not installed (Debian: apt-get install redis-server)";
      return;
    }
    char tmpl[] = "/tmp/tendril-redis-XXXXXX";
    if (::mkdtemp(tmpl) == nullptr) {
      skip_ = std::string("mkdtemp: ") + std::strerror(errno);
      return;
    }
    dir_ = tmpl;
    // The free port may be taken before redis binds it: then it exits, and we try another.
    for (int attempt = 0; attempt < 5; ++attempt) {
      port_ = tendril::test::free_port();
      server_ = tendril::test::start_program(
          {"redis-server", "--port", std::to_string(port_), "--save", "", "--appendonly", "no",
           "--bind", "127.0.0.1", "--dir", dir_},
          dir_ + "/redis.log", {}, dir_);
      if (server_.pid < 0) {
        skip_ = std::string("cannot start redis-server: ") + std::strerror(errno);
        return;
      }
      // Until it answers PING (or exits), for up to 20 s.
      for (int i = 0; i < 400; ++i) {
        int st = 0;
        if (::waitpid(server_.pid, &st, WNOHANG) == server_.pid) {
          server_.pid = -1;
          break;
        }
        const timeval limit{1, 0};
        context_ptr c(redisConnectWithTimeout("127.0.0.1", port_, limit));
        if (c && c->err == 0) {
          if (text(command(c.get(), "PING").get()) == "PONG") return;
        }
        ::usleep(50'000);
      }
      tendril::test::stop_program(server_, SIGKILL);
    }
    skip_ = "redis-server did not start: " + tendril::test::read_file(dir_ + "/redis.log");
  }

  static void TearDownTestSuite() {
    tendril::test::stop_program(server_, SIGTERM);
    if (!dir_.empty()) {
      std::error_code ec;
      std::filesystem::remove_all(dir_, ec);
      dir_.clear();
    }
  }

  void SetUp() override {
    if (!skip_.empty()) GTEST_SKIP() << skip_;
  }

  // open_context() is a blocking redisContext on the suite's server; the test fails if it is not.
  static context_ptr open_context() {
    context_ptr c(redisConnect("127.0.0.1", port_));
    EXPECT_TRUE(c && c->err == 0) << (c ? c->errstr : "out of memory");
    return c;
  }

  static inline std::string skip_, dir_;
  static inline std::uint16_t port_ = 0;
  static inline tendril::test::child server_;
};

}  // namespace

TEST_F(redis_hooked, blpop_parks_only_its_greenlet_and_gets_what_another_pushes) {
  int ticks = 0;
  bool done = false;
  auto ticker = spawn([&] {
    while (!done) {
      ++ticks;
      tendril::sleep(20ms);
    }
  });

  bool blpop_returned = false;
  std::string popped;
  std::chrono::steady_clock::duration blpop_took{};
  auto blocker = spawn([&] {
    auto c = open_context();
    if (!c || c->err) return;
    const auto start = std::chrono::steady_clock::now();
    // The server's own time limit (20 s) only stops a broken test from hanging.
    auto r = command(c.get(), "BLPOP %s %d", "tendril:queue", 20);
    blpop_took = std::chrono::steady_clock::now() - start;
    blpop_returned = true;
    popped = r ? text(r.get()) : std::string("(null): ") + c->errstr;
  });

  // A worker that does SET, GET and RPUSH on its own connection while the BLPOP waits: it
  // starts once the server counts the BLPOP's client as blocked.
  constexpr int rounds = 50;
  int rounds_while_blocked = 0;
  bool saw_blocked_client = false;
  std::vector<std::string> worker_errors;
  auto worker = spawn([&] {
    auto c = open_context();
    if (!c || c->err) return;
    for (int i = 0; i < 1000 && !saw_blocked_client; ++i) {
      saw_blocked_client = text(command(c.get(), "INFO clients").get()).find("blocked_clients:1") !=
                           std::string::npos;
      if (!saw_blocked_client) tendril::sleep(10ms);
    }
    for (int i = 0; i < rounds; ++i) {
      const std::string key = "tendril:k" + std::to_string(i);
      const std::string value = "v" + std::to_string(i);
      const std::string set = text(command(c.get(), "SET %s %s", key.c_str(), value.c_str()).get());
      const std::string got = text(command(c.get(), "GET %s", key.c_str()).get());
      const std::string len = text(command(c.get(), "RPUSH %s %d", "tendril:other", i).get());
      if (set != "OK" || got != value || len != std::to_string(i + 1))
        worker_errors.push_back(set + " " + got + " " + len);
      if (!blpop_returned) ++rounds_while_blocked;
      tendril::sleep(2ms);
    }
  });

  // The pusher: once the worker is done, the value the BLPOP waits for.
  std::string pushed;
  auto pusher = spawn([&] {
    auto c = open_context();
    if (!c || c->err) return;
    worker.join();
    ::usleep(200'000);  // plain libc: the BLPOP must still be waiting afterwards
    pushed = text(command(c.get(), "RPUSH %s %s", "tendril:queue", "the value").get());
  });

  tendril::joinall(blocker, worker, pusher);
  done = true;
  ticker.join();

  for (const auto& e : worker_errors) ADD_FAILURE() << "worker: " << e;
  EXPECT_TRUE(saw_blocked_client);
  EXPECT_EQ(pushed, "1");
  EXPECT_EQ(popped, "[tendril:queue,the value]");
  EXPECT_EQ(rounds_while_blocked, rounds);  // every round ran while the BLPOP was parked
  EXPECT_GE(blpop_took, 200ms);
  EXPECT_LT(blpop_took, 15s);
  EXPECT_GE(ticks, 5);

  auto c = open_context();
  ASSERT_TRUE(c && c->err == 0);
  EXPECT_EQ(text(command(c.get(), "LLEN %s", "tendril:other").get()), std::to_string(rounds));
  EXPECT_EQ(text(command(c.get(), "LLEN %s", "tendril:queue").get()), "0");
  std::printf("BLPOP waited %.3f s; %d ticks\n", std::chrono::duration<double>(blpop_took).count(),
              ticks);
}

TEST_F(redis_hooked, twenty_clients_increment_one_counter_at_once) {
  constexpr int n = 20;
  constexpr int each = 100;
  std::vector<std::string> errors(n);
  std::vector<tendril::task<void>> tasks;
  for (int i = 0; i < n; ++i) {
    tasks.push_back(spawn([&, i] {
      auto c = open_context();
      if (!c || c->err) return;
      // Half one command at a time, half pipelined (redisAppendCommand / redisGetReply).
      for (int k = 0; k < each / 2; ++k) {
        auto r = command(c.get(), "INCR %s", "tendril:counter");
        if (!r || r->type != REDIS_REPLY_INTEGER) errors[i] = "INCR: " + text(r.get());
      }
      for (int k = 0; k < each / 2; ++k) redisAppendCommand(c.get(), "INCR %s", "tendril:counter");
      for (int k = 0; k < each / 2; ++k) {
        void* raw = nullptr;
        if (redisGetReply(c.get(), &raw) != REDIS_OK) {
          errors[i] = std::string("redisGetReply: ") + c->errstr;
          break;
        }
        reply_ptr r(static_cast<redisReply*>(raw));
        if (r->type != REDIS_REPLY_INTEGER) errors[i] = "pipelined INCR: " + text(r.get());
      }
    }));
  }
  tendril::joinall(tasks);
  for (int i = 0; i < n; ++i) EXPECT_EQ(errors[i], "") << "client " << i;
  auto c = open_context();
  ASSERT_TRUE(c && c->err == 0);
  EXPECT_EQ(text(command(c.get(), "GET %s", "tendril:counter").get()), std::to_string(n * each));
}

// redisSetTimeout() sets SO_RCVTIMEO and SO_SNDTIMEO: a BLPOP that nobody answers ends after
// it with hiredis's I/O error (EAGAIN), while the other greenlets keep running.
TEST_F(redis_hooked, a_redisSetTimeout_limit_ends_a_blpop_nobody_answers) {
  int ticks = 0;
  bool done = false;
  auto ticker = spawn([&] {
    while (!done) {
      ++ticks;
      tendril::sleep(20ms);
    }
  });
  bool got_reply = true;
  int err = 0;
  std::string errstr;
  std::chrono::steady_clock::duration took{};
  auto t = spawn([&] {
    auto c = open_context();
    if (!c || c->err) return;
    ASSERT_EQ(redisSetTimeout(c.get(), timeval{0, 300'000}), REDIS_OK);
    const auto start = std::chrono::steady_clock::now();
    auto r = command(c.get(), "BLPOP %s %d", "tendril:nothing", 0);
    took = std::chrono::steady_clock::now() - start;
    got_reply = r != nullptr;
    err = c->err;
    errstr = c->errstr;
  });
  t.join();
  done = true;
  ticker.join();
  EXPECT_FALSE(got_reply);
  EXPECT_EQ(err, REDIS_ERR_IO) << errstr;
  EXPECT_EQ(errstr, std::strerror(EAGAIN));
  EXPECT_GE(took, 250ms);
  EXPECT_LT(took, 10s);
  EXPECT_GE(ticks, 5);
}

TEST_F(redis_hooked, a_refused_connection_is_reported_by_hiredis) {
  const std::uint16_t port = tendril::test::free_port();
  int err = 0;
  std::string errstr;
  auto t = spawn([&] {
    context_ptr c(redisConnect("127.0.0.1", port));
    ASSERT_TRUE(c);
    err = c->err;
    errstr = c->errstr;
  });
  t.join();
  EXPECT_EQ(err, REDIS_ERR_IO);
  EXPECT_NE(errstr.find("refused"), std::string::npos) << errstr;
}
