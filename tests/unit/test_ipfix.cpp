// The IPFIX encoder of NAT events (lib/control/ipfix.hpp): exact bytes of a message as RFC 7011
// lays it out with RFC 8158's NAT44 session fields, the sequence number, when the template is sent
// again, and the message size bound.
#include <arpa/inet.h>

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "control/ipfix.hpp"

namespace natgw::control::ipfix {
namespace {

std::string hex(const std::string& b) {
  static const char* d = "0123456789abcdef";
  std::string s;
  for (unsigned char c : b) s += std::string{d[c >> 4], d[c & 15]};
  return s;
}

uint16_t be16(const std::string& b, size_t at) {
  return static_cast<uint16_t>((static_cast<unsigned char>(b[at]) << 8) |
                               static_cast<unsigned char>(b[at + 1]));
}
uint32_t be32(const std::string& b, size_t at) { return (uint32_t{be16(b, at)} << 16) | be16(b, at + 2); }

nat::NatEvent udp_event(nat::NatEventKind kind) {
  nat::NatEvent e{};
  e.kind = kind;
  e.proto = 17;
  e.in_ip = htonl(0xc0a80a02);  // 192.168.10.2
  e.in_port = htons(40000);
  e.out_ip = htonl(0x0a00030a);  // 10.0.3.10
  e.out_port = htons(1024);
  e.remote_ip = htonl(0xcb00710a);  // 203.0.113.10
  e.remote_port = htons(53);
  return e;
}

constexpr int64_t kStart = 1764698400000;  // 2025-12-02T18:00:00.000Z

// A create's times: all three its first packet.
Times at(int64_t ms) { return {.event_ms = ms, .start_ms = ms, .end_ms = ms}; }

TEST(Ipfix, AFirstMessageIsTheTemplateThenTheRecordExactly) {
  MessageBuilder b(7);
  EXPECT_TRUE(b.empty());
  EXPECT_EQ(b.take(kStart), "") << "no record, no message";
  b.add(udp_event(nat::NatEventKind::kCreate), at(kStart + 123), kStart + 500);
  EXPECT_EQ(b.records(), 1u);
  const std::string m = b.take(kStart + 1000);
  EXPECT_EQ(hex(m),
            // header: version 10, length 116, export time 1764698401 s, sequence 0, domain 7
            "000a0074"
            "692f2921"
            "00000000"
            "00000007"
            // template set (id 2, 52 bytes): template 256, 11 fields (id, length)
            "00020034"
            "0100000b"
            "01430008"
            "00e60001"
            "00040001"
            "00080004"
            "00e10004"
            "00070002"
            "00e30002"
            "000c0004"
            "000b0002"
            "00980008"
            "00990008"
            // data set 256, 48 bytes: time, natEvent 4 (NAT44 session create), UDP, 192.168.10.2 ->
            // 10.0.3.10, 40000 -> 1024, 203.0.113.10:53, start, end (the same: its first packet)
            "01000030"
            "0000019ae038a57b"
            "04"
            "11"
            "c0a80a02"
            "0a00030a"
            "9c40"
            "0400"
            "cb00710a"
            "0035"
            "0000019ae038a57b"
            "0000019ae038a57b");
  EXPECT_EQ(b.sequence(), 1u);
  EXPECT_TRUE(b.empty());
}

TEST(Ipfix, ADeleteCarriesItsTimeStartAndLastPacketAndTheSequenceCountsRecords) {
  MessageBuilder b(1);
  b.add(udp_event(nat::NatEventKind::kCreate), at(kStart), kStart + 60'000);
  b.add(udp_event(nat::NatEventKind::kCreate), at(kStart), kStart + 60'000);
  const std::string first = b.take(kStart + 60'000);
  ASSERT_EQ(first.size(), kHeaderSize + 52 + 4 + 2 * kRecordSize);
  // The next message: no template (sent 9 s ago), sequence = the 2 records before it. A session
  // from 18:00:00 whose last packet was at 18:01:05, ended and logged at 18:01:09.
  b.add(udp_event(nat::NatEventKind::kDelete),
        {.event_ms = kStart + 69'000, .start_ms = kStart, .end_ms = kStart + 65'000}, kStart + 69'000);
  const std::string m = b.take(kStart + 69'000);
  ASSERT_EQ(m.size(), kHeaderSize + 4 + kRecordSize);
  EXPECT_EQ(be32(m, 8), 2u) << "sequence: data records sent before this message";
  EXPECT_EQ(be16(m, 16), kTemplateId) << "a data set first: no template this time";
  EXPECT_EQ(be16(m, 18), 4 + kRecordSize);
  const size_t r = 20;
  EXPECT_EQ(hex(m.substr(r, 8)), "0000019ae039b288")
      << "observationTimeMilliseconds: the delete (69 s after the start)";
  EXPECT_EQ(static_cast<unsigned char>(m[r + 8]), kNat44SessionDelete);
  EXPECT_EQ(hex(m.substr(r + 28, 8)), "0000019ae038a500") << "flowStartMilliseconds: the session's start";
  EXPECT_EQ(hex(m.substr(r + 36, 8)), "0000019ae039a2e8") << "flowEndMilliseconds: its last packet";
  EXPECT_EQ(b.sequence(), 3u);
}

TEST(Ipfix, TheTemplateIsSentAgainEveryTenSecondsAndEvery64Messages) {
  MessageBuilder b;
  const auto has_template = [&](int64_t now) {
    b.add(udp_event(nat::NatEventKind::kCreate), at(now), now);
    return be16(b.take(now), 16) == kTemplateSetId;
  };
  EXPECT_TRUE(has_template(kStart));
  EXPECT_FALSE(has_template(kStart + 9'999));
  EXPECT_TRUE(has_template(kStart + 10'000));
  int with = 0;
  for (int i = 0; i < 128; ++i) with += has_template(kStart + 10'001);
  EXPECT_EQ(with, 2) << "every 64th message carries it within ten seconds";
  b.restart(9);
  EXPECT_TRUE(has_template(kStart + 10'002)) << "a new collector gets it first";
  b.add(udp_event(nat::NatEventKind::kCreate), at(kStart), kStart);
  const std::string m = b.take(kStart + 10'003);
  EXPECT_EQ(be32(m, 8), 1u) << "a new collector's sequence starts at 0";
  EXPECT_EQ(be32(m, 12), 9u);
}

// A message that was not sent may have carried the template: the next one carries it again. A
// wall clock stepped back (NTP) is no reason to wait up to the step plus ten seconds for it.
TEST(Ipfix, TheTemplateGoesAgainAfterAFailedSendAndWhenTheClockStepsBack) {
  MessageBuilder b;
  const auto has_template = [&](int64_t now) {
    b.add(udp_event(nat::NatEventKind::kCreate), at(now), now);
    return be16(b.take(now), 16) == kTemplateSetId;
  };
  EXPECT_TRUE(has_template(kStart));
  EXPECT_FALSE(has_template(kStart + 1'000));
  b.resend_template();
  EXPECT_TRUE(has_template(kStart + 2'000)) << "after a failed send";
  EXPECT_FALSE(has_template(kStart + 3'000));
  EXPECT_TRUE(has_template(kStart - 3'600'000)) << "the clock stepped back an hour";
  EXPECT_FALSE(has_template(kStart - 3'599'000)) << "then every ten seconds from there";
  EXPECT_EQ(b.sequence(), 6u) << "the sequence goes on";
}

TEST(Ipfix, AFullMessageStaysWithinTheSizeBound) {
  MessageBuilder b;
  unsigned n = 0;
  while (!b.full()) b.add(udp_event(nat::NatEventKind::kCreate), at(kStart), kStart), ++n;
  const std::string first = b.take(kStart);
  // 16 + 52 + 4 + 30 * 44 = 1,392 bytes; 16 + 4 + 31 * 44 = 1,384.
  EXPECT_EQ(n, 30u) << "with the template";
  EXPECT_EQ(n, (kMaxMessage - kHeaderSize - kTemplateSetSize - 4) / kRecordSize);
  EXPECT_EQ(first.size(), 1392u);
  EXPECT_GT(first.size() + kRecordSize, kMaxMessage) << "no room was left for another record";
  EXPECT_EQ(be16(first, 2), first.size()) << "the header's length is the message's";
  n = 0;
  while (!b.full()) b.add(udp_event(nat::NatEventKind::kCreate), at(kStart), kStart), ++n;
  EXPECT_EQ(n, 31u) << "without the template, more records";
  EXPECT_EQ(n, (kMaxMessage - kHeaderSize - 4) / kRecordSize);
  const std::string second = b.take(kStart);
  EXPECT_EQ(second.size(), 1384u);
  EXPECT_EQ(be16(second, 16), kTemplateId);
}

// A host refused at its limit: RFC 8158's quota-exceeded record (template 257), its template in the
// same message before it, the data sets switching between the two templates in arrival order.
nat::NatEvent quota_event(uint32_t limit) {
  nat::NatEvent e{};
  e.kind = nat::NatEventKind::kQuotaSessions;
  e.proto = 6;
  e.end_ms = limit;
  e.in_ip = htonl(0xc0a80a02);  // 192.168.10.2
  return e;
}

TEST(Ipfix, AQuotaRecordCarriesItsOwnTemplateInItsMessage) {
  MessageBuilder b(7);
  b.add(udp_event(nat::NatEventKind::kCreate), at(kStart), kStart);
  b.add_other(quota_event(100), kStart + 5, kStart);
  b.add_other(quota_event(2), kStart + 6, kStart);
  b.add(udp_event(nat::NatEventKind::kCreate), at(kStart + 7), kStart);
  EXPECT_EQ(b.records(), 4u);
  const std::string m = b.take(kStart + 1000);
  // The sets: session template, one session record, quota template, two quota records, one session record.
  std::vector<std::pair<uint16_t, uint16_t>> sets;  // id, length
  for (size_t at = kHeaderSize; at + 4 <= m.size(); at += be16(m, at + 2)) sets.emplace_back(be16(m, at), be16(m, at + 2));
  const std::vector<std::pair<uint16_t, uint16_t>> want = {
      {2, 52}, {256, 48}, {2, 28}, {257, 4 + 2 * 21}, {256, 48}};
  EXPECT_EQ(sets, want);
  EXPECT_EQ(m.size(), 16u + 52 + 48 + 28 + 46 + 48);
  EXPECT_EQ(be16(m, 2), m.size());
  const size_t qt = kHeaderSize + 52 + 48;
  EXPECT_EQ(hex(m.substr(qt, 28)),
            "0002001c"   // template set, 28 bytes
            "01010005"   // template 257, 5 fields
            "01430008"   // observationTimeMilliseconds
            "00e60001"   // natEvent
            "01d20004"   // natQuotaExceededEvent
            "01d90004"   // maxEntriesPerUser
            "00080004"); // sourceIPv4Address
  EXPECT_EQ(hex(m.substr(qt + 28 + 4, 21)),
            "0000019ae038a505"  // 2025-12-02T18:00:00.005Z
            "0d"                // natEvent 13: quota exceeded
            "00000003"          // maximum entries per user
            "00000064"          // the limit, 100
            "c0a80a02");        // the host
  EXPECT_EQ(b.sequence(), 4u) << "quota records are data records too";
  // The next message has a quota record: its template again (not on the session template's schedule).
  b.add_other(quota_event(100), kStart + 2000, kStart + 2000);
  const std::string n = b.take(kStart + 2000);
  EXPECT_EQ(be16(n, kHeaderSize), 2);
  EXPECT_EQ(be16(n, kHeaderSize + 4), kQuotaTemplateId);
  EXPECT_EQ(n.size(), 16u + 28 + 4 + 21);
}

TEST(Ipfix, QuotaRecordsStayWithinTheSizeBound) {
  MessageBuilder b;
  unsigned n = 0;
  while (b.empty() || b.room_for(quota_event(10))) b.add_other(quota_event(10), kStart, kStart), ++n;
  EXPECT_EQ(n, 61u) << "16 + 52 + 28 + 4 + 61 * 21 = 1,381 bytes";
  EXPECT_EQ(b.take(kStart).size(), 1381u);
  // A message full of session records has no room for a quota record and its template.
  while (!b.full()) b.add(udp_event(nat::NatEventKind::kCreate), at(kStart), kStart);
  EXPECT_FALSE(b.room_for(quota_event(10)));
  EXPECT_EQ(b.take(kStart).size(), 1384u) << "31 session records, as before";
}

// No port left on an address: RFC 8158's ports-exhausted record (template 258), beside a quota record in
// the same message, each with its template once.
TEST(Ipfix, APortsExhaustedRecordNamesTheAddressAndProtocol) {
  MessageBuilder b(7);
  nat::NatEvent x = udp_event(nat::NatEventKind::kPortsExhausted);
  EXPECT_TRUE(b.room_for(x));
  b.add_other(x, kStart + 5, kStart);
  b.add_other(quota_event(4), kStart + 6, kStart);
  b.add_other(x, kStart + 7, kStart);
  const std::string m = b.take(kStart);
  std::vector<std::pair<uint16_t, uint16_t>> sets;
  for (size_t at = kHeaderSize; at + 4 <= m.size(); at += be16(m, at + 2)) sets.emplace_back(be16(m, at), be16(m, at + 2));
  const std::vector<std::pair<uint16_t, uint16_t>> want = {
      {2, 52}, {2, 24}, {258, 4 + 14}, {2, 28}, {257, 4 + 21}, {258, 4 + 14}};
  EXPECT_EQ(sets, want) << "each template once, before its first record";
  const size_t t = kHeaderSize + 52;
  EXPECT_EQ(hex(m.substr(t, 24 + 18)),
            "00020018"          // template set, 24 bytes
            "01020004"          // template 258, 4 fields
            "01430008"          // observationTimeMilliseconds
            "00e60001"          // natEvent
            "00e10004"          // postNATSourceIPv4Address
            "00040001"          // protocolIdentifier
            "01020012"          // its data set, 18 bytes
            "0000019ae038a505"  // the time
            "0c"                // natEvent 12: NAT ports exhausted
            "0a00030a"          // 10.0.3.10
            "11");              // UDP
  EXPECT_EQ(m.size(), 16u + 52 + 24 + 18 + 28 + 25 + 18);
  EXPECT_EQ(be16(m, 2), m.size());
}

}  // namespace
}  // namespace natgw::control::ipfix
