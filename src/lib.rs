//! `deployer`: guarded rollouts for Google Cloud Run.
//!
//! The binary (`src/main.rs`) parses the command line and hands over to [`cli`], the only module
//! that prints or asks questions. Domain modules own one concern each and report through
//! typed values, never by printing. See `docs/ARCHITECTURE.md` for the map.

pub mod analysis;
pub mod checks;
pub mod cli;
pub mod config;
pub mod emulator;
pub mod exit;
pub mod interaction;
pub mod platform;
pub mod preflight;
pub mod repo;
pub mod rollout;
#[cfg(test)]
mod testing;

/// Installs rustls' `ring` crypto provider once per process. The Google and HTTP clients are
/// built without a default provider (the default, aws-lc, is a long C build), so every entry
/// point calls this before making a TLS client. Calling it again is harmless.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
