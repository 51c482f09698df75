//! `patchtrail-fuzz TARGET`: under AFL++ (built with the `afl` feature by
//! `fuzz/run.sh`), runs TARGET on each input AFL++ gives it.
//! `patchtrail-fuzz TARGET FILE…`, in any build: runs TARGET on each FILE
//! (a crash AFL++ found, to reproduce it with a backtrace).
//! `patchtrail-fuzz TARGET --seeds`: lists the files its corpus starts from.

use std::process::ExitCode;

use patchtrail_fuzz::Target;

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let names: Vec<&str> = Target::ALL.iter().map(|t| t.name()).collect();
    let Some(target) = args.next().as_deref().and_then(Target::parse) else {
        eprintln!("usage: patchtrail-fuzz TARGET [FILE…|--seeds]\ntargets: {}", names.join(", "));
        return ExitCode::from(2);
    };
    let files: Vec<String> = args.collect();
    if files == ["--seeds"] {
        target.seeds().iter().for_each(|seed| println!("{}", seed.display()));
        return ExitCode::SUCCESS;
    }
    if files.is_empty() {
        return fuzz(target);
    }
    for file in files {
        match std::fs::read(&file) {
            Ok(bytes) => {
                target.run(&bytes);
                println!("{file}: ok");
            }
            Err(e) => {
                eprintln!("error: cannot read {file}: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    ExitCode::SUCCESS
}

#[cfg(feature = "afl")]
fn fuzz(target: Target) -> ExitCode {
    afl::fuzz!(|data: &[u8]| target.run(data));
    ExitCode::SUCCESS
}

#[cfg(not(feature = "afl"))]
fn fuzz(target: Target) -> ExitCode {
    eprintln!(
        "error: this build replays files only (`patchtrail-fuzz {} FILE…`); fuzz/run.sh builds the fuzzer",
        target.name()
    );
    ExitCode::from(2)
}
