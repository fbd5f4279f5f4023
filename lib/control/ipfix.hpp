// IPFIX messages (RFC 7011) carrying NAT44 session events as RFC 8158 defines them (§4.2.1: natEvent
// 4 = NAT44 session create, 5 = NAT44 session delete), for [nat_events] ipfix = "addr:port". One
// template (id 256) for both kinds: the event's time, natEvent, protocol, inside source address and
// port, their translations, destination address and port, and the session's first and last packets
// (flowStartMilliseconds, flowEndMilliseconds: the delete record then says how long the session lived
// and when it was last used). ICMP query sessions carry their identifiers in the port fields. A host
// refused at nat.max_sessions_per_host or max_ports_per_host is RFC 8158's quota-exceeded event
// (natEvent 13, natQuotaExceededEvent 3 "maximum entries per user", §4.1.4): template 257, sent in each
// message that carries such a record (they are rare: one a second per host at most), so its schedule
// is not the session template's. No port left on an outside address for a protocol is "NAT ports
// exhausted" (natEvent 12, template 258, sent the same way). Control thread only (EventLog); no
// parsing of untrusted bytes here.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "nat/nat_event.hpp"

namespace natgw::control::ipfix {

constexpr uint16_t kVersion = 10;
constexpr uint16_t kTemplateSetId = 2;
constexpr uint16_t kTemplateId = 256;
constexpr uint8_t kNat44SessionCreate = 4;  // IANA natEvent values (RFC 8158)
constexpr uint8_t kNat44SessionDelete = 5;
constexpr uint16_t kQuotaTemplateId = 257;
constexpr uint8_t kQuotaExceeded = 13;           // natEvent
constexpr uint32_t kMaxEntriesPerUser = 3;       // natQuotaExceededEvent
constexpr size_t kQuotaRecordSize = 21;
constexpr size_t kQuotaTemplateSetSize = 28;     // set header, template header, 5 fields of 4 bytes
constexpr uint16_t kExhaustedTemplateId = 258;
constexpr uint8_t kPortsExhausted = 12;          // natEvent
constexpr size_t kExhaustedRecordSize = 14;
constexpr size_t kExhaustedTemplateSetSize = 24; // set header, template header, 4 fields of 4 bytes
// Messages stay under a 1500-byte path with room for IP, UDP and a tunnel header: exporters over UDP
// must not rely on IP fragmentation (RFC 7011 §10.3.3).
constexpr size_t kMaxMessage = 1400;
constexpr size_t kHeaderSize = 16;
constexpr size_t kRecordSize = 44;
constexpr size_t kTemplateSetSize = 52;  // set header, template header, 11 fields of 4 bytes
// A full message holds (1400 - 16 - 52 - 4) / 44 = 30 records with the template, (1400 - 16 - 4) / 44
// = 31 without.
// UDP gives no way to know a collector (re)started: the template goes again in a message at least
// every 10 s and every 64 messages (RFC 7011 §8.4), so a collector reads records again soon after;
// also at once when the wall clock has gone back since the last (a step back must not hold it off).
constexpr int64_t kTemplateEveryMs = 10'000;
constexpr unsigned kTemplateEveryMessages = 64;

struct Field {
  uint16_t id;  // IANA information element
  uint16_t length;
};
// The template's fields, in record order.
inline constexpr Field kFields[] = {
    {323, 8},  // observationTimeMilliseconds: the event's time (the first packet; a delete: when logged)
    {230, 1},  // natEvent
    {4, 1},    // protocolIdentifier
    {8, 4},    // sourceIPv4Address: the inside host
    {225, 4},  // postNATSourceIPv4Address: its outside address
    {7, 2},    // sourceTransportPort
    {227, 2},  // postNAPTSourceTransportPort
    {12, 4},   // destinationIPv4Address: the remote host
    {11, 2},   // destinationTransportPort
    {152, 8},  // flowStartMilliseconds: the session's creation
    {153, 8},  // flowEndMilliseconds: its last packet (a create: its first, the creation)
};

// The quota-exceeded template's fields, in record order.
inline constexpr Field kQuotaFields[] = {
    {323, 8},  // observationTimeMilliseconds: when the host's flow was refused
    {230, 1},  // natEvent: 13, quota exceeded
    {466, 4},  // natQuotaExceededEvent: 3, maximum entries per user
    {473, 4},  // maxEntriesPerUser: the limit (sessions, or ports for max_ports_per_host)
    {8, 4},    // sourceIPv4Address: the inside host
};

// The ports-exhausted template's fields, in record order.
inline constexpr Field kExhaustedFields[] = {
    {323, 8},  // observationTimeMilliseconds: when a new flow found no port
    {230, 1},  // natEvent: 12, NAT ports exhausted
    {225, 4},  // postNATSourceIPv4Address: the outside address
    {4, 1},    // protocolIdentifier: whose ports (6, 17 or 1)
};

// A record's times, wall-clock milliseconds since the epoch.
struct Times {
  int64_t event_ms;  // observationTimeMilliseconds
  int64_t start_ms;  // flowStartMilliseconds
  int64_t end_ms;    // flowEndMilliseconds
};

// Builds one message at a time: records are added until full(); take() returns the finished message
// (header filled in) and starts over. The sequence number counts the data records of every message
// taken (RFC 7011 §3.1), sent or not, so a collector sees what was lost.
class MessageBuilder {
 public:
  explicit MessageBuilder(uint32_t domain = 1) : domain_(domain) {}

  // A new collector or domain: the sequence starts at 0 and the next message carries the template.
  void restart(uint32_t domain);
  // The message last taken was not sent: the next one carries the template (it may have been in it).
  void resend_template() { template_sent_ = false; }
  // `now_ms`: the wall clock now (when the template was last sent is measured on it).
  void add(const nat::NatEvent& e, const Times& t, int64_t now_ms);
  // A quota or ports-exhausted event (not e.is_session()) at `event_ms`; only when room_for(e) (or
  // the message is empty). Its template goes before it, once a message.
  void add_other(const nat::NatEvent& e, int64_t event_ms, int64_t now_ms);
  bool empty() const { return records_ == 0; }
  // No room for another session record (nor, then, for the template a new message may need).
  bool full() const { return buf_.size() + (set_id_ == kTemplateId ? 0 : 4) + kRecordSize > kMaxMessage; }
  bool room_for(const nat::NatEvent& e) const;
  unsigned records() const { return records_; }
  // The message, its export time `now_ms` (seconds in the header); empty when no record was added.
  std::string take(int64_t now_ms);
  uint32_t sequence() const { return sequence_; }  // data records in the messages taken so far

 private:
  void begin(int64_t now_ms);
  void open_set(uint16_t id);  // close the open data set (if any) and open one for template `id`
  void close_set();
  std::string buf_;
  size_t data_set_ = 0;         // where the open data set's header is in buf_
  uint16_t set_id_ = 0;         // the open data set's template, 0: none
  unsigned other_templates_ = 0;  // which of templates 257, 258 this message carries (bit id - 257)
  unsigned records_ = 0;
  uint32_t sequence_ = 0;
  uint32_t domain_;
  bool template_sent_ = false;
  int64_t template_ms_ = 0;
  unsigned since_template_ = 0;  // messages since the last with the template
};

}  // namespace natgw::control::ipfix
