//! `deployer`: guarded rollouts for Google Cloud Run.
//!
//! The binary (`src/main.rs`) parses the command line and hands over to [`cli`], the only module
//! that prints or asks questions. Domain modules own one concern each and report through
//! typed values, never by printing. See `docs/ARCHITECTURE.md` for the map.

pub mod cli;
pub mod config;
pub mod emulator;
pub mod exit;
