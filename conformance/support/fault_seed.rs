//! The seeded kill instants of the fault tests (conformance/faults.rs, and through `#[path]`
//! the network and image suites): TINYRT_FAULT_SEED picks the sequence, TINYRT_FAULT_ITERS
//! the number of kills per case, so a failure can be replayed.

use std::time::Duration;

/// xorshift64*: small, seedable, good enough to spread kill instants.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A delay below `max_us` microseconds.
    pub fn delay(&mut self, max_us: u64) -> Duration {
        Duration::from_micros(self.next() % max_us.max(1))
    }
}

pub fn seed() -> u64 {
    std::env::var("TINYRT_FAULT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x7e57_5eed)
}

/// TINYRT_FAULT_ITERS, or `default`.
pub fn iterations(default: usize) -> usize {
    std::env::var("TINYRT_FAULT_ITERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}
