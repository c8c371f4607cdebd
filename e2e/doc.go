// Package e2e holds Malleable's end-to-end tests: the appliance (admin API,
// broker, reconciler, embedded allocator, M2 backend) in-process over a
// real SQLite store, and tenants' smart-proxies served as
// `malleable smart-proxy` serves them, driven as each tenant's Foreman
// drives them. The tests with real ends (ipmi_sim BMCs, tgtd, qemu nodes)
// skip when those are missing, unless MALLEABLE_REQUIRE_REAL=1. It has no
// code outside its tests; nothing imports it.
package e2e
