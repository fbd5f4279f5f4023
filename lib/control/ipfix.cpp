#include "control/ipfix.hpp"

#include <cstring>

namespace natgw::control::ipfix {

namespace {

void put16(std::string& b, uint16_t v) {
  b.push_back(static_cast<char>(v >> 8));
  b.push_back(static_cast<char>(v));
}

void put32(std::string& b, uint32_t v) {
  put16(b, static_cast<uint16_t>(v >> 16));
  put16(b, static_cast<uint16_t>(v));
}

void put64(std::string& b, uint64_t v) {
  put32(b, static_cast<uint32_t>(v >> 32));
  put32(b, static_cast<uint32_t>(v));
}

// Already in network order (the event's addresses and ports): copied as they are.
template <typename T>
void put_raw(std::string& b, T v) {
  char c[sizeof(T)];
  std::memcpy(c, &v, sizeof c);
  b.append(c, sizeof c);
}

void set16(std::string& b, size_t at, uint16_t v) {
  b[at] = static_cast<char>(v >> 8);
  b[at + 1] = static_cast<char>(v);
}

template <size_t N>
constexpr size_t record_size(const Field (&fields)[N]) {
  size_t n = 0;
  for (const Field& f : fields) n += f.length;
  return n;
}
template <size_t N>
constexpr size_t template_set_size(const Field (&)[N]) {
  return 4 + 4 + 4 * N;  // set header, template header, (id, length) per field
}
static_assert(record_size(kFields) == kRecordSize && template_set_size(kFields) == kTemplateSetSize);
static_assert(record_size(kQuotaFields) == kQuotaRecordSize && template_set_size(kQuotaFields) == kQuotaTemplateSetSize);
static_assert(record_size(kExhaustedFields) == kExhaustedRecordSize &&
              template_set_size(kExhaustedFields) == kExhaustedTemplateSetSize);
static_assert(kHeaderSize + kTemplateSetSize + 4 + kRecordSize <= kMaxMessage);

template <size_t N>
void put_template(std::string& b, uint16_t id, const Field (&fields)[N]) {
  put16(b, kTemplateSetId);
  put16(b, static_cast<uint16_t>(template_set_size(fields)));
  put16(b, id);
  put16(b, static_cast<uint16_t>(N));
  for (const Field& f : fields) {
    put16(b, f.id);
    put16(b, f.length);
  }
}

// The template of an event that is not a session's: its id, what its record and template set
// take, and how to write the template.
struct Other {
  uint16_t id;
  size_t record, template_set;
  void (*put_template)(std::string&);
};
Other other_of(const nat::NatEvent& e) {
  if (e.kind == nat::NatEventKind::kPortsExhausted)
    return {kExhaustedTemplateId, kExhaustedRecordSize, kExhaustedTemplateSetSize,
            [](std::string& b) { put_template(b, kExhaustedTemplateId, kExhaustedFields); }};
  return {kQuotaTemplateId, kQuotaRecordSize, kQuotaTemplateSetSize,
          [](std::string& b) { put_template(b, kQuotaTemplateId, kQuotaFields); }};
}

}  // namespace

void MessageBuilder::restart(uint32_t domain) {
  buf_.clear();
  records_ = 0;
  sequence_ = 0;
  domain_ = domain;
  template_sent_ = false;
  set_id_ = 0;
  other_templates_ = 0;
}

void MessageBuilder::begin(int64_t now_ms) {
  buf_.assign(kHeaderSize, '\0');  // filled in by take()
  if (!template_sent_ || now_ms < template_ms_ || now_ms - template_ms_ >= kTemplateEveryMs ||
      since_template_ + 1 >= kTemplateEveryMessages) {
    put_template(buf_, kTemplateId, kFields);
    template_sent_ = true;
    template_ms_ = now_ms;
    since_template_ = 0;
  } else {
    ++since_template_;
  }
  set_id_ = 0;
  other_templates_ = 0;
}

void MessageBuilder::close_set() {
  if (set_id_ != 0) set16(buf_, data_set_ + 2, static_cast<uint16_t>(buf_.size() - data_set_));
  set_id_ = 0;
}

void MessageBuilder::open_set(uint16_t id) {
  close_set();
  data_set_ = buf_.size();
  set_id_ = id;
  put16(buf_, id);
  put16(buf_, 0);  // the set's length, filled in by close_set()
}

void MessageBuilder::add(const nat::NatEvent& e, const Times& t, int64_t now_ms) {
  if (records_ == 0) begin(now_ms);
  if (set_id_ != kTemplateId) open_set(kTemplateId);
  put64(buf_, static_cast<uint64_t>(t.event_ms));
  buf_.push_back(
      static_cast<char>(e.kind == nat::NatEventKind::kCreate ? kNat44SessionCreate : kNat44SessionDelete));
  buf_.push_back(static_cast<char>(e.proto));
  put_raw(buf_, e.in_ip);
  put_raw(buf_, e.out_ip);
  put_raw(buf_, e.in_port);
  put_raw(buf_, e.out_port);
  put_raw(buf_, e.remote_ip);
  put_raw(buf_, e.remote_port);
  put64(buf_, static_cast<uint64_t>(t.start_ms));
  put64(buf_, static_cast<uint64_t>(t.end_ms));
  ++records_;
}

bool MessageBuilder::room_for(const nat::NatEvent& e) const {
  const Other o = other_of(e);
  const bool has_template = other_templates_ & (1u << (o.id - kQuotaTemplateId));
  return buf_.size() + (has_template ? 0 : o.template_set) + (set_id_ == o.id ? 0 : 4) + o.record <= kMaxMessage;
}

void MessageBuilder::add_other(const nat::NatEvent& e, int64_t event_ms, int64_t now_ms) {
  if (records_ == 0) begin(now_ms);
  const Other o = other_of(e);
  const unsigned bit = 1u << (o.id - kQuotaTemplateId);
  if (!(other_templates_ & bit)) {
    close_set();
    o.put_template(buf_);
    other_templates_ |= bit;
  }
  if (set_id_ != o.id) open_set(o.id);
  put64(buf_, static_cast<uint64_t>(event_ms));
  if (o.id == kQuotaTemplateId) {
    buf_.push_back(static_cast<char>(kQuotaExceeded));
    put32(buf_, kMaxEntriesPerUser);
    put32(buf_, e.quota_limit());
    put_raw(buf_, e.in_ip);
  } else {
    buf_.push_back(static_cast<char>(kPortsExhausted));
    put_raw(buf_, e.out_ip);
    buf_.push_back(static_cast<char>(e.proto));
  }
  ++records_;
}

std::string MessageBuilder::take(int64_t now_ms) {
  if (records_ == 0) return {};
  close_set();
  std::string m;
  m.reserve(kMaxMessage);
  put16(m, kVersion);
  put16(m, static_cast<uint16_t>(buf_.size()));
  put32(m, static_cast<uint32_t>(now_ms / 1000));  // export time, seconds (wraps in 2106, as RFC 7011 says)
  put32(m, sequence_);
  put32(m, domain_);
  m.append(buf_, kHeaderSize, std::string::npos);
  sequence_ += records_;
  records_ = 0;
  buf_.clear();
  return m;
}

}  // namespace natgw::control::ipfix
