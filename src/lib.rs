//! The parts of the `patchtrail` binary other code needs too: the
//! configuration loader, which the fuzzer (`fuzz/`) drives with arbitrary
//! text as `--config` files and `PATCHTRAIL__…` variables.

pub mod config;
