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

use sluice_spam::features::{extract_with, received_hops};
use sluice_spam::model::Model;
use sluice_spam::train::{Confusion, Example, Settings, fold_of, train};
use sluice_spam::trust::{Trust, parse_network};

fn usage() -> ExitCode {
    eprintln!(
        "usage:\n  sluice-spam train --ham DIR --spam DIR -o MODEL\n  sluice-spam evaluate --ham DIR --spam DIR [--folds K] [--manifest MANIFEST.tsv] [--threshold POINTS] [--internal-hosts FILE] [--learner NAME] [--bags N] [--feedback] [--sweep]\n  sluice-spam score --model MODEL MESSAGE..."
    );
    ExitCode::from(2)
}

/// Every message file under `dir` (plain folders and Maildirs alike); at least one.
fn messages(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let out = sluice_spam::files::message_files(dir)?;
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

/// Reads a list of the site's hosts and networks: one per line, `#` starts a comment; an entry
/// that is an address or `ADDR/PREFIX` is a network, anything else a host name (a leading
/// `.` stands for a whole domain).
fn trust_file(path: Option<&PathBuf>) -> Result<Trust, String> {
    let mut trust = Trust::default();
    let Some(path) = path else {
        return Ok(trust);
    };
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    for (n, line) in text.lines().enumerate() {
        let entry = line.split('#').next().unwrap_or("").trim();
        if entry.is_empty() {
            continue;
        }
        if entry.contains('/') || entry.parse::<std::net::IpAddr>().is_ok() {
            let net =
                parse_network(entry).map_err(|e| format!("{}:{}: {e}", path.display(), n + 1))?;
            trust.internal_networks.push(net);
        } else {
            trust.internal_hosts.push(entry.to_ascii_lowercase());
        }
    }
    Ok(trust)
}

/// Finds a corpus' collecting sites from the messages alone (never their labels), as an
/// operator would name them in `internal_hosts`:
/// 1. the hosts that write the top hop of at least 1 % of the messages;
/// 2. the site's domains: recipient domains (`for <…>`) of at least 1 % of the hops those
///    hosts write;
/// 3. the site's relays (secondary MX): hosts that take mail for the site's domains and hand
///    it to a site host, in at least 5 % of the messages.
fn internal_hosts(dirs: &[PathBuf]) -> Result<String, String> {
    let mut chains = Vec::new();
    for dir in dirs {
        for p in messages(dir)? {
            let raw = std::fs::read(&p).map_err(|e| format!("{}: {e}", p.display()))?;
            chains.push(received_hops(&raw));
        }
    }
    let n = chains.len();
    let count = |it: &mut dyn Iterator<Item = String>| {
        let mut c: HashMap<String, usize> = HashMap::new();
        for k in it {
            *c.entry(k).or_default() += 1;
        }
        c
    };
    let above = |c: &HashMap<String, usize>, share: f64| -> Vec<(String, usize)> {
        let mut v: Vec<(String, usize)> = c
            .iter()
            .filter(|(k, v)| !k.is_empty() && **v as f64 >= share * n as f64)
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        v
    };
    let tops = above(
        &count(
            &mut chains
                .iter()
                .filter_map(|c| c.first())
                .map(|h| h.by.clone()),
        ),
        0.01,
    );
    let is_top = |h: &str| h == "localhost" || tops.iter().any(|(t, _)| t == h);
    let domains = above(
        &count(
            &mut chains
                .iter()
                .flatten()
                .filter(|h| is_top(&h.by))
                .map(|h| h.for_domain.clone()),
        ),
        0.01,
    );
    let relays = above(
        &count(&mut chains.iter().flat_map(|c| {
            c.windows(2)
                .filter(|w| {
                    is_top(&w[0].by)
                        && !is_top(&w[1].by)
                        && domains.iter().any(|(d, _)| *d == w[1].for_domain)
                })
                .map(|w| w[1].by.clone())
                .collect::<Vec<_>>()
        })),
        0.05,
    );
    let mut out = format!(
        "# The collecting sites' hosts of a corpus of {n} messages, found by `sluice-spam internal-hosts`\n\
         # from the messages alone (labels unused). Hosts writing the top hop of >= 1 % of messages:\n"
    );
    for (h, c) in &tops {
        out.push_str(&format!("{h:<40} # top hop of {c} messages\n"));
    }
    let names: Vec<&str> = domains.iter().map(|(d, _)| d.as_str()).collect();
    out.push_str(&format!(
        "# Relays taking mail for the sites' domains ({}) to a host above, in >= 5 % of messages:\n",
        names.join(", ")
    ));
    for (h, c) in &relays {
        out.push_str(&format!("{h:<40} # relayed {c} messages\n"));
    }
    Ok(out)
}

fn load(
    ham: &Path,
    spam: &Path,
    groups: &HashMap<String, String>,
    trust: &Trust,
) -> Result<Vec<Example>, String> {
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
                features: extract_with(&raw, trust),
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

/// Prints the errors the same scores would make at other thresholds (`--sweep`): how far
/// the ranking itself is from a target, apart from where the decision sits.
fn sweep(scored: &[(f32, bool)]) {
    for tenths in (-50..=100).step_by(5) {
        let t = tenths as f32 / 10.0;
        let fp = scored.iter().filter(|(s, spam)| !spam && *s >= t).count();
        let fneg = scored.iter().filter(|(s, spam)| *spam && *s < t).count();
        println!(
            "threshold {t:5.1}: false positives {fp:3}, spam missed {fneg:3}, accuracy {:.2} %",
            100.0 * (1.0 - (fp + fneg) as f64 / scored.len().max(1) as f64)
        );
    }
}

/// Training settings from `--learner`, `--epochs`, `--rate`, `--margin`, `--ham-weight`,
/// `--bags`.
fn settings_from(opt: &dyn Fn(&str) -> Option<PathBuf>) -> Result<Settings, String> {
    let mut s = Settings::default();
    let num = |name: &str| -> Result<Option<f32>, String> {
        opt(name)
            .map(|p| {
                p.to_string_lossy()
                    .parse::<f32>()
                    .map_err(|_| format!("{name}: a number"))
            })
            .transpose()
    };
    if let Some(l) = opt("--learner") {
        s.learner = l.to_string_lossy().parse()?;
    }
    if let Some(v) = num("--epochs")? {
        s.epochs = v as usize;
    }
    if let Some(v) = num("--rate")? {
        s.rate = v;
    }
    if let Some(v) = num("--margin")? {
        s.margin = v;
    }
    if let Some(v) = num("--ham-weight")? {
        s.ham_weight = v;
    }
    if let Some(v) = num("--bags")? {
        if !(1.0..=64.0).contains(&v) {
            return Err("--bags: a number from 1 to 64".into());
        }
        s.bags = v as usize;
    }
    Ok(s)
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
            let trust = trust_file(opt("--internal-hosts").as_ref())?;
            let examples = load(&ham, &spam, &HashMap::new(), &trust)?;
            let refs: Vec<&Example> = examples.iter().collect();
            let model = train(&refs, settings_from(&opt)?);
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
            let feedback = args.iter().any(|a| a == "--feedback");
            let t = Instant::now();
            let trust = trust_file(opt("--internal-hosts").as_ref())?;
            let examples = load(&ham, &spam, &groups, &trust)?;
            let extract_secs = t.elapsed().as_secs_f64();
            let mut total = Confusion::default();
            let mut scored: Vec<(f32, bool)> = Vec::new();
            for fold in 0..k {
                let (mut test, training): (Vec<&Example>, Vec<&Example>) =
                    examples.iter().partition(|e| fold_of(e.group, k) == fold);
                // Ham and spam interleaved as they would arrive (the order of --feedback).
                test.sort_by_key(|e| e.group.wrapping_mul(0xff51_afd7_ed55_8ccd));
                let settings = settings_from(&opt)?;
                let model = train(&training, settings);
                let mut c = Confusion::default();
                // With --feedback, the site's users correct each mistake as they see it
                // (`sluice spam learn`): the site model is retrained on their corrections
                // before the next message is judged.
                let mut corrected: Vec<(bool, sluice_spam::features::Features)> = Vec::new();
                let mut site_weights = std::collections::BTreeMap::new();
                for e in &test {
                    let site_logit: f32 = e
                        .features
                        .terms()
                        .map(|(i, x)| site_weights.get(&i).copied().unwrap_or(0.0) * x)
                        .sum();
                    let j = sluice_spam::model::judgement(
                        &e.features,
                        model.logit(&e.features) + site_logit,
                    );
                    if feedback && e.spam != (j.score >= threshold) {
                        corrected.push((e.spam, e.features.clone()));
                        site_weights = sluice_spam::site::train(&|f| model.logit(f), &corrected);
                    }
                    c.add(e.spam, j.score >= threshold);
                    scored.push((j.score, e.spam));
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
            if args.iter().any(|a| a == "--sweep") {
                sweep(&scored);
            }
        }
        "score" => {
            let path = need("--model")?;
            let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            let model =
                Model::from_bytes(&bytes).map_err(|e| format!("{}: {e}", path.display()))?;
            let trust = trust_file(opt("--internal-hosts").as_ref())?;
            let mut files = Vec::new();
            let mut it = args.iter().skip(1);
            while let Some(a) = it.next() {
                if a.starts_with("--") {
                    it.next();
                } else {
                    files.push(a);
                }
            }
            for f in files {
                let raw = std::fs::read(f).map_err(|e| format!("{f}: {e}"))?;
                let j = model.judge(&extract_with(&raw, &trust));
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
        "internal-hosts" => {
            let dirs: Vec<PathBuf> = args.iter().skip(1).map(PathBuf::from).collect();
            if dirs.is_empty() {
                return Err("internal-hosts: give the corpus folders".into());
            }
            print!("{}", internal_hosts(&dirs)?);
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
