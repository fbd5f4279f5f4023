// Benchmark registration (dynamic: scales and skips depend on options and memory).
#pragma once

namespace natgw::perf {
void register_established();
void register_setup();
void register_tables();
void register_expiry();
// Free the established-path population (a 10M table holds gigabytes).
void release_established();
}  // namespace natgw::perf
