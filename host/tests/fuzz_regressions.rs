//! The inputs the fuzzers found worth keeping (`host/fuzz/regressions/<target>/`), run
//! through the same harnesses as `cargo fuzz` uses, plus a short deterministic smoke pass:
//! each kept input mutated a few hundred times. Runs on stable Rust in well under a minute;
//! the real fuzzing is `cargo +nightly fuzz run <target>` (see `host/fuzz/README.md`).

use std::path::{Path, PathBuf};

fn inputs(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/regressions")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "{}: no regression inputs", dir.display());
    files
        .into_iter()
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            (p, bytes)
        })
        .collect()
}

/// Runs `harness` on `input`, naming the input when it panics.
fn run(target: &str, what: &str, harness: fn(&[u8]), input: &[u8]) {
    if std::panic::catch_unwind(|| harness(input)).is_err() {
        panic!("fuzz target {target}: {what} ({} bytes) fails", input.len());
    }
}

#[test]
fn kept_inputs_pass() {
    for &(target, harness) in sluice::fuzz::TARGETS {
        for (path, bytes) in inputs(target) {
            run(target, &path.display().to_string(), harness, &bytes);
        }
    }
}

/// xorshift64: a fixed sequence, so a failure here reproduces exactly.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % (n.max(1) as u64)).expect("fits")
    }
}

/// libFuzzer's simplest mutations: flip, insert, delete, duplicate a span, splice another input.
fn mutate(rng: &mut Rng, input: &[u8], other: &[u8]) -> Vec<u8> {
    let mut v = input.to_vec();
    for _ in 0..=rng.below(4) {
        let at = rng.below(v.len() + 1);
        match rng.below(5) {
            0 if at < v.len() => v[at] ^= 1 << rng.below(8),
            1 => v.insert(at, (rng.next() & 0xff) as u8),
            2 if at < v.len() => {
                let end = (at + rng.below(16) + 1).min(v.len());
                v.drain(at..end);
            }
            3 if at < v.len() => {
                let end = (at + rng.below(64) + 1).min(v.len());
                let span = v[at..end].to_vec();
                v.splice(at..at, span);
            }
            _ => {
                let from = rng.below(other.len() + 1);
                let end = (from + rng.below(64)).min(other.len());
                v.splice(at..at, other[from..end].iter().copied());
            }
        }
    }
    v
}

#[test]
fn smoke_pass_over_mutated_inputs() {
    const ROUNDS: usize = 2000;
    let mut rng = Rng(0x5eed_51ce);
    for &(target, harness) in sluice::fuzz::TARGETS {
        let kept: Vec<Vec<u8>> = inputs(target).into_iter().map(|(_, b)| b).collect();
        for round in 0..ROUNDS {
            let a = &kept[rng.below(kept.len())];
            let b = &kept[rng.below(kept.len())];
            let input = mutate(&mut rng, a, b);
            run(
                target,
                &format!("smoke round {round}: {input:?}"),
                harness,
                &input,
            );
        }
    }
}
