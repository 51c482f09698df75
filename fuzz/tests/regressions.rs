//! Every seed of the fuzz corpus and every input that ever made a target
//! fail, through the target, in CI: the targets build, and a crash once
//! found stays fixed.

use std::panic::{AssertUnwindSafe, catch_unwind};

use patchtrail_fuzz::Target;

#[test]
fn every_seed_and_every_kept_crash_passes_its_target() {
    let mut failures = Vec::new();
    let mut runs = 0;
    for target in Target::ALL {
        let seeds = target.seeds();
        assert!(!seeds.is_empty(), "the {} target has no seed", target.name());
        for file in seeds.iter().chain(&target.regressions()) {
            let bytes = std::fs::read(file).expect("reads a seed");
            runs += 1;
            if catch_unwind(AssertUnwindSafe(|| target.run(&bytes))).is_err() {
                failures.push(format!("{}: {}", target.name(), file.display()));
            }
        }
    }
    assert!(failures.is_empty(), "{} of {runs} inputs fail:\n{}", failures.len(), failures.join("\n"));
}
