//! `deployer`: guarded rollouts for Google Cloud Run.
//!
//! The binary (`src/main.rs`) parses the command line and hands over to [`cli`], the only module
//! that prints or asks questions. Domain modules own one concern each and report through
//! typed values, never by printing. See `docs/ARCHITECTURE.md` for the map.

pub mod analysis;
pub mod checks;
pub mod cli;
pub mod config;
pub mod credentials;
pub mod doctor;
pub mod drift;
pub mod emulator;
pub mod exit;
pub mod fleet;
pub mod google_errors;
pub mod health;
pub mod image;
pub mod interaction;
pub mod notify;
pub mod pipeline;
pub mod platform;
pub mod preflight;
pub mod process;
pub mod release;
pub mod repo;
pub mod rollout;
pub mod synthetic_load;
#[cfg(test)]
mod testing;
pub mod untrusted;
pub mod wiring;

/// Installs rustls' `ring` crypto provider as the process default, once. Every TLS client
/// (reqwest, the Google clients) needs a process-level provider, and the crates are built without
/// one on purpose (no aws-lc C build). Idempotent: later calls, and calls after another part
/// installed it, do nothing.
pub fn install_crypto_provider() {
    // `install_default` fails only when a provider is already installed, which is the goal.
    let _ = rustls::crypto::ring::default_provider().install_default();
}
