#include "cli/daemon_log.h"

#include <fcntl.h>
#include <unistd.h>

#include <chrono>
#include <string>
#include <thread>

#include "absl/strings/str_cat.h"
#include "capsule/fd.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace bunker::cli {
namespace {

using ::testing::HasSubstr;

struct Pipe {
  Pipe() {
    int fds[2];
    EXPECT_EQ(::pipe2(fds, O_CLOEXEC), 0);
    read_end.Reset(fds[0]);
    write_end.Reset(fds[1]);
  }
  // Everything written so far, once the write end is closed.
  std::string ReadAll() {
    write_end.Reset();
    std::string out;
    char buf[65536];
    ssize_t n;
    while ((n = ::read(read_end.get(), buf, sizeof buf)) > 0) out.append(buf, n);
    return out;
  }
  capsule::Fd read_end;
  capsule::Fd write_end;
};

TEST(DaemonLogTest, WritesEachLineInOrderWithItsPrefixAndTerminalSafe) {
  Pipe pipe;
  {
    DaemonLog log(pipe.write_end.get(), "capsuled");
    log.Line("first");
    log.Line("second \x1b[2J\nforged line");
  }
  const std::string out = pipe.ReadAll();
  EXPECT_EQ(out.find("capsuled: first\ncapsuled: second "), 0u) << out;
  EXPECT_EQ(out.find('\x1b'), std::string::npos) << out;
  EXPECT_EQ(out.find("\ncapsuled: forged"), std::string::npos) << out;
  EXPECT_EQ(out.back(), '\n');
}

// A reader that stops reading: the pipe fills, and whoever logs is never held (were Line() to
// wait for the writer, this test would hang: nobody reads until every call returned); what did
// not fit in the queue is counted, and the count is written once the reader reads again.
TEST(DaemonLogTest, AStalledReaderNeverHoldsTheLoggerAndDroppedLinesAreCounted) {
  Pipe pipe;
  ASSERT_GT(::fcntl(pipe.write_end.get(), F_SETPIPE_SZ, 4096), 0);
  const std::string big(1000, 'x');
  std::string out;
  std::thread reader;
  {
    DaemonLog log(pipe.write_end.get(), "capsuled", /*max_queued=*/16, /*drain_ms=*/60000);
    for (int i = 0; i < 2000; ++i) log.Line(absl::StrCat(i, " ", big));
    log.Line("last");
    reader = std::thread([&] {
      char buf[65536];
      ssize_t n;
      while ((n = ::read(pipe.read_end.get(), buf, sizeof buf)) > 0) out.append(buf, n);
    });
  }  // drains: the reader reads again
  pipe.write_end.Reset();
  reader.join();
  EXPECT_EQ(out.find("capsuled: 0 x"), 0u);
  EXPECT_THAT(out, HasSubstr(" log lines dropped: the log's reader is slow\n"));
  EXPECT_LT(out.size(), 2000u * 1000u);
}

}  // namespace
}  // namespace bunker::cli
