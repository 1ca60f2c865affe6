//! Shared by the fuzz targets: [`checks`] holds what each target checks, so that
//! `tests/fuzz_regressions.rs` (on stable, without this crate's dependencies) replays the
//! committed inputs through the same code.

pub mod checks;
