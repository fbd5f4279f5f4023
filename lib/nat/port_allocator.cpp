#include "nat/port_allocator.hpp"

namespace natgw::nat {

PortAllocator::PortAllocator(uint16_t lo, uint16_t hi)
    : lo_(lo), hi_(hi), nfree_(size()), free_(new uint16_t[size()]), state_(new PortState[size()]) {
  for (uint32_t i = 0; i < size(); ++i) {
    free_[i] = static_cast<uint16_t>(lo_ + i);
    state_[i] = PortState{static_cast<uint16_t>(i), 0};
  }
}

void PortAllocator::remove_free(uint16_t port) {
  PortState& st = state_[port - lo_];
  const uint16_t idx = st.pos;
  const uint16_t last = free_[--nfree_];
  free_[idx] = last;
  state_[last - lo_].pos = idx;
  st.refs = 1;
}

bool PortAllocator::take(uint16_t port) {
  if (!owns(port) || state_[port - lo_].refs != 0) return false;
  remove_free(port);
  return true;
}

bool PortAllocator::take_any(uint32_t rnd, uint16_t& port) {
  if (nfree_ == 0) return false;
  port = free_[rnd % nfree_];
  remove_free(port);
  return true;
}

void PortAllocator::release(uint16_t port) {
  PortState& st = state_[port - lo_];
  if (st.refs == 0) return;  // defensive: double release is a bug, never a crash
  if (--st.refs == 0) {
    st.pos = static_cast<uint16_t>(nfree_);
    free_[nfree_++] = port;
  }
}

}  // namespace natgw::nat
