//! Test harness: fake provider APIs, test hosts and the ACME test server.
