//! `sluice-spam`: train and evaluate spam-score models natively.
//!
//! ```text
//! sluice-spam train --ham DIR --spam DIR -o model.bin
//! sluice-spam evaluate --ham DIR --spam DIR [--folds 5] [--manifest MANIFEST.tsv] [--threshold 5]
//! sluice-spam score --model model.bin MESSAGE.eml...
//! ```
//! A DIR holds `.eml` files or is a Maildir (its `cur/` and `new/` are read).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use sluice_spam::features::extract;
use sluice_spam::model::Model;
use sluice_spam::train::{Confusion, Example, Settings, fold_of, train};

fn usage() -> ExitCode {
    eprintln!(
        "usage:\n  sluice-spam train --ham DIR --spam DIR -o MODEL\n  sluice-spam evaluate --ham DIR --spam DIR [--folds K] [--manifest MANIFEST.tsv] [--threshold POINTS]\n  sluice-spam score --model MODEL MESSAGE..."
    );
    ExitCode::from(2)
}

/// Every message file under `dir` (recursively: plain folders and Maildirs alike).
fn messages(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries =
            std::fs::read_dir(&d).map_err(|e| format!("cannot read {}: {e}", d.display()))?;
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                if p.file_name().is_some_and(|n| n != "tmp") {
                    stack.push(p);
                }
            } else if p.file_name().is_some_and(|n| {
                let n = n.to_string_lossy();
                !n.starts_with('.') && !n.ends_with(".tsv") && !n.ends_with(".md")
            }) {
                out.push(p);
            }
        }
    }
    out.sort();
    if out.is_empty() {
        return Err(format!("no messages in {}", dir.display()));
    }
    Ok(out)
}

fn group_hash(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn load(ham: &Path, spam: &Path, groups: &HashMap<String, String>) -> Result<Vec<Example>, String> {
    let mut out = Vec::new();
    for (dir, is_spam) in [(ham, false), (spam, true)] {
        for p in messages(dir)? {
            let raw = std::fs::read(&p).map_err(|e| format!("{}: {e}", p.display()))?;
            let name = p
                .file_name()
                .map(|n| n.to_string_lossy().to_string())
                .unwrap_or_default();
            let group = groups.get(&name).cloned().unwrap_or(name);
            if std::env::var_os("SPAM_SHOW").is_some() {
                eprintln!("#{} {}", out.len(), p.display());
            }
            out.push(Example {
                features: extract(&raw),
                spam: is_spam,
                group: group_hash(&group),
            });
        }
    }
    Ok(out)
}

/// file name → duplicate group, from the corpus manifest.
fn manifest(path: Option<&PathBuf>) -> Result<HashMap<String, String>, String> {
    let Some(path) = path else {
        return Ok(HashMap::new());
    };
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap_or("").split('\t').collect();
    let col = |name: &str| header.iter().position(|h| *h == name);
    let (Some(file), Some(group)) = (col("file"), col("dup_group")) else {
        return Err(format!(
            "{}: needs the columns file and dup_group",
            path.display()
        ));
    };
    Ok(lines
        .filter_map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            let name = f.get(file)?.rsplit('/').next()?.to_string();
            Some((name, f.get(group)?.to_string()))
        })
        .collect())
}

fn run() -> Result<(), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let cmd = args.first().cloned().unwrap_or_default();
    let opt = |name: &str| -> Option<PathBuf> {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .map(PathBuf::from)
    };
    let need = |name: &str| opt(name).ok_or_else(|| format!("{cmd}: {name} is required"));
    match cmd.as_str() {
        "train" => {
            let (ham, spam, out) = (need("--ham")?, need("--spam")?, need("-o")?);
            let t = Instant::now();
            let examples = load(&ham, &spam, &HashMap::new())?;
            let refs: Vec<&Example> = examples.iter().collect();
            let model = train(&refs, Settings::default());
            let tmp = out.with_extension("tmp");
            std::fs::write(&tmp, model.to_bytes())
                .and_then(|_| std::fs::rename(&tmp, &out))
                .map_err(|e| format!("{}: {e}", out.display()))?;
            println!(
                "trained on {} ham and {} spam in {:.1} s: {}",
                examples.iter().filter(|e| !e.spam).count(),
                examples.iter().filter(|e| e.spam).count(),
                t.elapsed().as_secs_f64(),
                out.display()
            );
        }
        "evaluate" => {
            let (ham, spam) = (need("--ham")?, need("--spam")?);
            let k: usize = opt("--folds")
                .map(|p| p.to_string_lossy().parse().map_err(|_| "--folds: a number"))
                .transpose()?
                .unwrap_or(5);
            let threshold: f32 = opt("--threshold")
                .map(|p| {
                    p.to_string_lossy()
                        .parse()
                        .map_err(|_| "--threshold: a number")
                })
                .transpose()?
                .unwrap_or(5.0);
            let groups = manifest(opt("--manifest").as_ref())?;
            let t = Instant::now();
            let examples = load(&ham, &spam, &groups)?;
            let extract_secs = t.elapsed().as_secs_f64();
            let mut total = Confusion::default();
            for fold in 0..k {
                let (test, training): (Vec<&Example>, Vec<&Example>) =
                    examples.iter().partition(|e| fold_of(e.group, k) == fold);
                let settings = Settings::default();
                let model = train(&training, settings);
                let mut c = Confusion::default();
                for e in &test {
                    let j = model.judge(&e.features);
                    c.add(e.spam, j.score >= threshold);
                    if std::env::var_os("SPAM_SHOW").is_some() && e.spam != (j.score >= threshold) {
                        let idx = examples
                            .iter()
                            .position(|x| std::ptr::eq(x, *e))
                            .unwrap_or(0);
                        eprintln!("miss #{idx} spam={} score={:.1}", e.spam, j.score);
                    }
                }
                println!(
                    "fold {}/{k}: {} messages, accuracy {:.2} %, false positives {} ({:.2} %), spam missed {}",
                    fold + 1,
                    c.total(),
                    100.0 * c.accuracy(),
                    c.false_spam,
                    100.0 * c.false_positive_rate(),
                    c.false_ham
                );
                total.true_spam += c.true_spam;
                total.true_ham += c.true_ham;
                total.false_spam += c.false_spam;
                total.false_ham += c.false_ham;
            }
            println!(
                "{k}-fold cross-validation over {} messages (threshold {threshold} points): accuracy {:.2} %, false-positive rate {:.2} % ({} of {} ham), spam recall {:.2} %; feature extraction {:.0} µs/message",
                total.total(),
                100.0 * total.accuracy(),
                100.0 * total.false_positive_rate(),
                total.false_spam,
                total.true_ham + total.false_spam,
                100.0 * total.spam_recall(),
                1e6 * extract_secs / examples.len().max(1) as f64
            );
        }
        "score" => {
            let path = need("--model")?;
            let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            let model =
                Model::from_bytes(&bytes).map_err(|e| format!("{}: {e}", path.display()))?;
            let files: Vec<&String> = args
                .iter()
                .skip(1)
                .filter(|a| !a.starts_with("--") && PathBuf::from(a) != path)
                .collect();
            for f in files {
                let raw = std::fs::read(f).map_err(|e| format!("{f}: {e}"))?;
                let j = model.judge(&extract(&raw));
                let tests: Vec<String> = j
                    .symbols
                    .iter()
                    .map(|(n, s)| format!("{n}={s:.1}"))
                    .collect();
                println!(
                    "{f}: score={:.1} p={:.4} tests={}",
                    j.score,
                    j.probability,
                    tests.join(",")
                );
            }
        }
        _ => return Err(String::new()),
    }
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.is_empty() => usage(),
        Err(e) => {
            eprintln!("sluice-spam: {e}");
            ExitCode::FAILURE
        }
    }
}
