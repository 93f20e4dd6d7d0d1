// The host leases' protocol, the sandbox's table and a holder's decisions (runtime/cluster/lease.h).
#include "runtime/cluster/lease.h"

#include <gtest/gtest.h>

namespace berth::lease {
namespace {

const std::string kToken = "0123456789abcdef0123456789abcdef";

TEST(LeaseProtocol, RequestsAreOneLineOfWordsAndRefusedWithWhy) {
  std::string why;
  auto r = parse_request("REPORT " + kToken + " berth-cl-2 fenced-3", &why);
  ASSERT_TRUE(r) << why;
  EXPECT_EQ(r->verb, Verb::kReport);
  EXPECT_EQ(r->host, "berth-cl-2");
  EXPECT_EQ(r->what, "fenced-3");
  EXPECT_EQ(format(*r), "REPORT " + kToken + " berth-cl-2 fenced-3");
  auto renew = parse_request("RENEW " + kToken + " h 10000", &why);
  ASSERT_TRUE(renew) << why;
  EXPECT_EQ(renew->ttl_ms, 10000);
  EXPECT_EQ(format(*renew), "RENEW " + kToken + " h 10000");
  EXPECT_FALSE(parse_request("RENEW " + kToken + " h", &why));
  EXPECT_EQ(why, "RENEW takes 3 words (and `nodocker`)");
  auto flagged = parse_request("RENEW " + kToken + " h 10000 nodocker", &why);
  ASSERT_TRUE(flagged) << why;
  EXPECT_TRUE(flagged->nodocker);
  EXPECT_FALSE(renew->nodocker);
  EXPECT_EQ(format(*flagged), "RENEW " + kToken + " h 10000 nodocker");
  EXPECT_FALSE(parse_request("RENEW " + kToken + " h 10000 docker", &why));
  EXPECT_EQ(why, "RENEW's fifth word can only be `nodocker`");
  EXPECT_FALSE(parse_request("REVOKE " + kToken + " h nodocker", &why));
  EXPECT_FALSE(parse_request("RENEW " + kToken + " h 0", &why));
  EXPECT_NE(why.find("milliseconds"), std::string::npos);
  EXPECT_FALSE(parse_request("RENEW  " + kToken + " h 1", &why));
  EXPECT_EQ(why, "an empty word at column 7");
  EXPECT_FALSE(parse_request("RENEW " + kToken + " h\x01 1", &why));
  EXPECT_NE(why.find("not printable ASCII"), std::string::npos);
  EXPECT_FALSE(parse_request(std::string(kMaxLine + 1, 'A'), &why));
  EXPECT_FALSE(parse_request("STEAL " + kToken + " h", &why));
  EXPECT_NE(why.find("unknown verb"), std::string::npos);
}

TEST(LeaseTable, RenewalsAreCountedUntilRevokedAndTheHoldersReportIsKept) {
  Table t(kToken, 1000);
  EXPECT_EQ(t.handle("ASK " + kToken + " h2", 1500), "LEASE -1 500 0 - -1 -1");
  EXPECT_EQ(t.handle("RENEW " + kToken + " h2 10000", 2000), "OK");
  EXPECT_EQ(t.handle("ASK " + kToken + " h2", 2300), "LEASE 300 1300 0 - 10000 -1");
  // A report without a revocation is nothing to keep.
  EXPECT_EQ(t.handle("REPORT " + kToken + " h2 fenced-1", 2300), "OK");
  EXPECT_EQ(t.handle("ASK " + kToken + " h2", 2300), "LEASE 300 1300 0 - 10000 -1");
  EXPECT_EQ(t.handle("REVOKE " + kToken + " h2", 2400), "OK");
  EXPECT_EQ(t.handle("RENEW " + kToken + " h2 10000", 2500), "REVOKED");
  EXPECT_EQ(t.handle("REPORT " + kToken + " h2 fenced-4", 2600), "OK");
  auto l = parse_lease(t.handle("ASK " + kToken + " h2", 2700));
  ASSERT_TRUE(l);
  EXPECT_EQ(l->silent_ms, 700);  // the refused renewal renewed nothing
  EXPECT_TRUE(l->revoked);
  EXPECT_EQ(l->report, "fenced-4");
  EXPECT_TRUE(l->settled_by_report());
  EXPECT_EQ(l->ttl_ms, 10000);
  EXPECT_EQ(t.handle("RESTORE " + kToken + " h2", 2800), "OK");
  EXPECT_EQ(t.handle("RENEW " + kToken + " h2 10000", 2900), "OK");
  EXPECT_EQ(t.handle("ASK " + kToken + " h2", 2900), "LEASE 0 1900 0 - 10000 -1");
}

// A holder whose dockerd refuses connections says so in each renewal: the table counts since the
// first such one, and a renewal that finds dockerd again ends it.
TEST(LeaseTable, AHolderWithoutItsDockerdIsCountedFromItsFirstSaying) {
  Table t(kToken, 0);
  EXPECT_EQ(t.handle("RENEW " + kToken + " h3 10000", 100), "OK");
  EXPECT_EQ(t.handle("RENEW " + kToken + " h3 10000 nodocker", 350), "OK");
  EXPECT_EQ(t.handle("RENEW " + kToken + " h3 10000 nodocker", 600), "OK");
  auto l = parse_lease(t.handle("ASK " + kToken + " h3", 700));
  ASSERT_TRUE(l);
  EXPECT_EQ(l->nodocker_ms, 350);
  EXPECT_EQ(l->silent_ms, 100);
  EXPECT_EQ(t.handle("RENEW " + kToken + " h3 10000", 850), "OK");
  EXPECT_EQ(parse_lease(t.handle("ASK " + kToken + " h3", 900))->nodocker_ms, -1);
  // Said by one host, of that host only.
  EXPECT_EQ(t.handle("RENEW " + kToken + " h3 10000 nodocker", 1000), "OK");
  EXPECT_EQ(parse_lease(t.handle("ASK " + kToken + " h2", 1100))->nodocker_ms, -1);
}

TEST(LeaseTable, AWrongTokenChangesNothing) {
  Table t(kToken, 0);
  EXPECT_EQ(t.handle("RENEW " + kToken + " h2 10000", 10), "OK");
  EXPECT_EQ(t.handle("REVOKE not-the-token h2", 20), "DENIED");
  EXPECT_EQ(t.handle("RENEW " + kToken + " h2 10000", 30), "OK");
  EXPECT_EQ(t.handle("bogus", 30).rfind("ERR ", 0), 0u);
}

TEST(LeaseHolder, KillsOnceRevokedOrSilentForHalfItsLeaseAndReportsOnce) {
  Holder h(10'000, 0);
  EXPECT_EQ(h.period_ms(), 250);
  h.answered("OK", 1000);
  EXPECT_FALSE(h.must_kill(5999));
  EXPECT_TRUE(h.must_kill(6001));  // silent for more than ttl / 2
  h.answered("", 6001);           // no answer changes nothing
  EXPECT_TRUE(h.must_kill(6002));
  EXPECT_FALSE(h.owes_report());  // nobody to report to while silent
  h.answered("OK", 7000);
  EXPECT_FALSE(h.must_kill(7001));
  h.answered("REVOKED", 7250);
  EXPECT_TRUE(h.must_kill(7250));
  EXPECT_TRUE(h.owes_report());
  h.reported();
  EXPECT_FALSE(h.owes_report());
  h.answered("REVOKED", 7500);
  EXPECT_FALSE(h.owes_report());
  h.answered("OK", 8000);  // restored
  EXPECT_FALSE(h.must_kill(8000));
}

TEST(LeaseProtocol, AnAskAnswerIsReadBackOrRefused) {
  auto l = parse_lease("LEASE -1 42 0 - -1");
  ASSERT_TRUE(l);
  EXPECT_EQ(l->silent_ms, -1);
  EXPECT_EQ(l->up_ms, 42);
  EXPECT_FALSE(l->revoked);
  EXPECT_EQ(l->report, "");
  EXPECT_FALSE(l->settled_by_report());
  l->report = "partial-2-of-3";  // not every kill answered: not settled by it
  EXPECT_FALSE(l->settled_by_report());
  l->report = "nodocker";
  EXPECT_TRUE(l->settled_by_report());
  EXPECT_EQ(l->nodocker_ms, -1);  // (a table of an older berth does not say)
  auto seven = parse_lease("LEASE 10 42 0 - 10000 500");
  ASSERT_TRUE(seven);
  EXPECT_EQ(seven->nodocker_ms, 500);
  EXPECT_FALSE(parse_lease("LEASE 10 42 0 - 10000 -2"));
  EXPECT_FALSE(parse_lease("LEASE 10 42 0 - 10000 5 6"));
  EXPECT_FALSE(parse_lease(""));
  EXPECT_FALSE(parse_lease("LEASE -1 42 0 -"));
  EXPECT_FALSE(parse_lease("LEASE -2 42 0 - -1"));
  EXPECT_FALSE(parse_lease("LEASE 1 42 2 - -1"));
  EXPECT_FALSE(parse_lease("LEASE x 42 0 - -1"));
  EXPECT_FALSE(parse_lease("LEASE 1 42 0 - -2"));
  EXPECT_FALSE(parse_lease("OK"));
}

}  // namespace
}  // namespace berth::lease
