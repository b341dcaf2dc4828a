// libpq under the hooks, against a PostgreSQL server the suite starts for itself (initdb into
// a temporary directory, a free loopback port, the unix socket in that directory; as the
// 'postgres' user when the tests run as root, which postgres refuses). Blocking libpq calls
// (PQconnectdb, PQexec) in greenlets overlap: twenty one-second queries take about a second;
// results, errors and LISTEN/NOTIFY through select() are libpq's as usual.
#include <gtest/gtest.h>
#include <libpq-fe.h>
#include <pwd.h>
#include <sys/select.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "child_process.hpp"
#include "tendril/monkey/monkey.hpp"
#include "tendril/tendril.hpp"

using namespace std::chrono_literals;
using tendril::spawn;
namespace fs = std::filesystem;

namespace {

// The directory of initdb, pg_ctl and postgres: $TENDRIL_PG_BINDIR, else the newest
// /usr/lib/postgresql/N/bin that has them (Debian's layout), else "" (not installed).
std::string pg_bindir() {
  if (const char* env = std::getenv("TENDRIL_PG_BINDIR"); env && *env) return env;
  std::string best;
  int best_version = -1;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator("/usr/lib/postgresql", ec)) {
    const std::string v = e.path().filename().string();
    const fs::path bin = e.path() / "bin";
    if (!fs::exists(bin / "initdb") || !fs::exists(bin / "pg_ctl")) continue;
    const int n = std::atoi(v.c_str());
    if (n > best_version) {
      best_version = n;
      best = bin.string();
    }
  }
  return best;
}

std::string tail(const std::string& s, std::size_t n = 1500) {
  return s.size() <= n ? s : "..." + s.substr(s.size() - n);
}

class pq_hooked : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    tendril::monkey::patch_all();
    start_server();
  }

  static void start_server() {
    const std::string bin = pg_bindir();
    if (bin.empty()) {
      skip_ =
          "PostgreSQL's server programs (initdb, pg_ctl) are not installed "
          "(Debian: apt-get install postgresql; or set TENDRIL_PG_BINDIR)";
      return;
    }
    uid_t uid = ::getuid();
    gid_t gid = ::getgid();
    if (::geteuid() == 0) {
      // postgres refuses to run as root: run it as the 'postgres' system user.
      const passwd* pw = ::getpwnam("postgres");
      if (pw == nullptr) {
        skip_ = "running as root and there is no 'postgres' user to run the server as";
        return;
      }
      if (::access("/usr/sbin/runuser", X_OK) != 0 && ::access("/sbin/runuser", X_OK) != 0) {
        skip_ = "running as root and runuser(1) is not there to run the server as 'postgres'";
        return;
      }
      as_ = {"runuser", "-u", "postgres", "--"};
      uid = pw->pw_uid;
      gid = pw->pw_gid;
    }
    char tmpl[] = "/tmp/tendril-pq-XXXXXX";
    if (::mkdtemp(tmpl) == nullptr) {
      skip_ = std::string("mkdtemp: ") + std::strerror(errno);
      return;
    }
    dir_ = tmpl;
    if (::chown(dir_.c_str(), uid, gid) != 0) {
      skip_ = "chown " + dir_ + ": " + std::strerror(errno);
      return;
    }
    data_ = dir_ + "/data";
    auto as_server = [&](std::vector<std::string> argv) {
      argv.insert(argv.begin(), as_.begin(), as_.end());
      return tendril::test::run_program(argv, {}, dir_);
    };
    const auto init = as_server(
        {bin + "/initdb", "-D", data_, "-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync"});
    if (init.status != 0) {
      skip_ = "initdb failed (status " + std::to_string(init.status) + "): " + tail(init.output);
      return;
    }
    pg_ctl_ = bin + "/pg_ctl";
    // The free port may be taken between finding it and postgres binding it: try a few.
    std::string why;
    for (int attempt = 0; attempt < 5; ++attempt) {
      const std::uint16_t port = tendril::test::free_port();
      const std::string log = dir_ + "/postgres-" + std::to_string(attempt) + ".log";
      const auto start =
          as_server({pg_ctl_, "-D", data_, "-l", log, "-w", "-t", "60", "-o",
                     "-p " + std::to_string(port) + " -k " + dir_ +
                         " -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=60",
                     "start"});
      if (start.status == 0) {
        running_ = true;
        conninfo_ = "host=127.0.0.1 port=" + std::to_string(port) +
                    " user=postgres dbname=postgres connect_timeout=20";
        return;
      }
      why = "pg_ctl start failed (status " + std::to_string(start.status) +
            "): " + tail(start.output) + "\nserver log: " + tail(tendril::test::read_file(log));
      if (why.find("already in use") == std::string::npos) break;
    }
    skip_ = why;
  }

  static void TearDownTestSuite() {
    if (running_) {
      std::vector<std::string> argv = as_;
      for (const auto& a : {pg_ctl_, std::string("-D"), data_, std::string("-m"),
                            std::string("immediate"), std::string("-w"), std::string("stop")})
        argv.push_back(a);
      tendril::test::run_program(argv, {}, dir_);
      running_ = false;
    }
    if (!dir_.empty()) {
      std::error_code ec;
      fs::remove_all(dir_, ec);
      dir_.clear();
    }
  }

  void SetUp() override {
    if (!skip_.empty()) GTEST_SKIP() << "cannot start PostgreSQL: " << skip_;
  }

  // open_connection() is PQconnectdb on the suite's server; the test fails if it is not
  // CONNECTION_OK.
  static PGconn* open_connection() {
    PGconn* c = PQconnectdb(conninfo_.c_str());
    EXPECT_EQ(PQstatus(c), CONNECTION_OK) << PQerrorMessage(c);
    return c;
  }

  static inline std::vector<std::string> as_;
  static inline std::string skip_, dir_, data_, pg_ctl_, conninfo_;
  static inline bool running_ = false;
};

}  // namespace

TEST_F(pq_hooked, twenty_connections_sleeping_one_second_each_take_about_one_second) {
  constexpr int n = 20;
  int ticks = 0;
  bool done = false;
  auto ticker = spawn([&] {
    while (!done) {
      ++ticks;
      tendril::sleep(50ms);
    }
  });
  std::vector<std::string> errors(n);
  std::vector<tendril::task<void>> tasks;
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < n; ++i) {
    tasks.push_back(spawn([&, i] {
      PGconn* c = PQconnectdb(conninfo_.c_str());
      if (PQstatus(c) != CONNECTION_OK) {
        errors[i] = std::string("connect: ") + PQerrorMessage(c);
      } else {
        PGresult* r = PQexec(c, "SELECT pg_sleep(1)");
        if (PQresultStatus(r) != PGRES_TUPLES_OK) errors[i] = PQresultErrorMessage(r);
        PQclear(r);
      }
      PQfinish(c);
    }));
  }
  tendril::joinall(tasks);
  const auto took = std::chrono::steady_clock::now() - start;
  done = true;
  ticker.join();
  for (int i = 0; i < n; ++i) EXPECT_EQ(errors[i], "") << "connection " << i;
  EXPECT_GE(took, 1s);
  EXPECT_LT(took, 10s);  // one after the other would take 20 s
  EXPECT_GE(ticks, 10);  // the ticker kept running meanwhile (about 20 in a second)
  std::printf("20 x pg_sleep(1): %.3f s, %d ticks\n", std::chrono::duration<double>(took).count(),
              ticks);
}

TEST_F(pq_hooked, a_query_returns_its_rows) {
  std::string error;
  int rows = 0;
  bool values_ok = true;
  std::string sum, big_length;
  auto t = spawn([&] {
    PGconn* c = open_connection();
    PGresult* r = PQexec(c, "SELECT i, repeat('x', i) FROM generate_series(1, 2000) AS i");
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
      error = PQresultErrorMessage(r);
    } else {
      rows = PQntuples(r);
      for (int i = 0; i < rows; ++i) {
        const int v = std::atoi(PQgetvalue(r, i, 0));
        if (v != i + 1 || PQgetlength(r, i, 1) != v) values_ok = false;
      }
    }
    PQclear(r);
    const char* params[] = {"40", "2"};
    r = PQexecParams(c, "SELECT $1::int + $2::int", 2, nullptr, params, nullptr, nullptr, 0);
    if (PQresultStatus(r) == PGRES_TUPLES_OK) sum = PQgetvalue(r, 0, 0);
    PQclear(r);
    // Eight megabytes in one value: many reads of the socket.
    r = PQexec(c, "SELECT repeat('y', 8 * 1024 * 1024)");
    if (PQresultStatus(r) == PGRES_TUPLES_OK) big_length = std::to_string(PQgetlength(r, 0, 0));
    PQclear(r);
    PQfinish(c);
  });
  t.join();
  EXPECT_EQ(error, "");
  EXPECT_EQ(rows, 2000);
  EXPECT_TRUE(values_ok);
  EXPECT_EQ(sum, "42");
  EXPECT_EQ(big_length, std::to_string(8 * 1024 * 1024));
}

TEST_F(pq_hooked, bad_sql_is_reported_by_libpq_and_the_connection_stays_usable) {
  ExecStatusType status = PGRES_EMPTY_QUERY;
  std::string sqlstate, message, after;
  auto t = spawn([&] {
    PGconn* c = open_connection();
    PGresult* r = PQexec(c, "SELEC 1");
    status = PQresultStatus(r);
    if (const char* s = PQresultErrorField(r, PG_DIAG_SQLSTATE)) sqlstate = s;
    message = PQerrorMessage(c);
    PQclear(r);
    r = PQexec(c, "SELECT 'still here'");
    if (PQresultStatus(r) == PGRES_TUPLES_OK) after = PQgetvalue(r, 0, 0);
    PQclear(r);
    PQfinish(c);
  });
  t.join();
  EXPECT_EQ(status, PGRES_FATAL_ERROR);
  EXPECT_EQ(sqlstate, "42601");  // syntax_error
  EXPECT_NE(message.find("syntax error"), std::string::npos) << message;
  EXPECT_EQ(after, "still here");
}

TEST_F(pq_hooked, a_refused_connection_is_reported_by_libpq) {
  const std::uint16_t port = tendril::test::free_port();
  ConnStatusType status = CONNECTION_OK;
  std::string message;
  auto t = spawn([&] {
    const std::string info = "host=127.0.0.1 port=" + std::to_string(port) + " user=postgres";
    PGconn* c = PQconnectdb(info.c_str());
    status = PQstatus(c);
    message = PQerrorMessage(c);
    PQfinish(c);
  });
  t.join();
  EXPECT_EQ(status, CONNECTION_BAD);
  EXPECT_NE(message.find("refused"), std::string::npos) << message;
}

// The way a gevent program waits for notifications: select() on PQsocket(), then
// PQconsumeInput() and PQnotifies(). Another greenlet NOTIFYs after a while.
TEST_F(pq_hooked, listen_waits_in_select_while_another_greenlet_notifies) {
  std::string channel, payload, error;
  bool listening = false;
  auto listener = spawn([&] {
    PGconn* c = open_connection();
    PGresult* r = PQexec(c, "LISTEN tendril_test");
    if (PQresultStatus(r) != PGRES_COMMAND_OK) error = PQresultErrorMessage(r);
    PQclear(r);
    listening = true;
    const int fd = PQsocket(c);
    const auto give_up = std::chrono::steady_clock::now() + 20s;
    while (error.empty() && channel.empty() && std::chrono::steady_clock::now() < give_up) {
      fd_set rd;
      FD_ZERO(&rd);
      FD_SET(fd, &rd);
      timeval tv{5, 0};
      if (::select(fd + 1, &rd, nullptr, nullptr, &tv) < 0) {
        error = std::string("select: ") + std::strerror(errno);
        break;
      }
      if (!PQconsumeInput(c)) {
        error = PQerrorMessage(c);
        break;
      }
      while (PGnotify* n = PQnotifies(c)) {
        channel = n->relname;
        payload = n->extra;
        PQfreemem(n);
      }
    }
    PQfinish(c);
  });
  int ticks_while_listening = 0;
  auto notifier = spawn([&] {
    while (!listening) tendril::sleep(10ms);
    for (int i = 0; i < 10; ++i) {  // the listener sits in select() meanwhile
      ++ticks_while_listening;
      tendril::sleep(30ms);
    }
    PGconn* c = open_connection();
    PGresult* r = PQexec(c, "NOTIFY tendril_test, 'hello from a greenlet'");
    if (PQresultStatus(r) != PGRES_COMMAND_OK) error = PQresultErrorMessage(r);
    PQclear(r);
    PQfinish(c);
  });
  tendril::joinall(listener, notifier);
  EXPECT_EQ(error, "");
  EXPECT_EQ(ticks_while_listening, 10);
  EXPECT_EQ(channel, "tendril_test");
  EXPECT_EQ(payload, "hello from a greenlet");
}
