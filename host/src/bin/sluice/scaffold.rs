//! `sluice plugin new NAME --lang rust|python|js [--hooks …]`: a ready-to-build plugin folder,
//! self-contained (the WIT and the SDK are copied in, so it builds outside this repository),
//! with a build script, a sample message, a configuration snippet and `check.sh`, which
//! replays the sample through the built plugin with `sluice plugin check` and passes out of
//! the box.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};

/// The WIT package and the SDKs, as this binary was built with them.
const WIT: &str = include_str!("../../../../wit/sluice-filter.wit");
/// The scaffold's `Cargo.lock` without its own package: the SDK's dependencies resolved, so
/// that a first build does not have to resolve them (and can run offline with the crates in
/// cargo's cache). The authoring test checks that a build leaves it unchanged.
const CARGO_LOCK: &str = include_str!("scaffold/Cargo.lock.txt");

/// [`CARGO_LOCK`] with the plugin's own package in its place: cargo sorts packages by name,
/// and rewrites a lock file whose order differs.
fn cargo_lock(name: &str) -> String {
    let mut parts = CARGO_LOCK.split("\n[[package]]\n");
    let head = parts.next().unwrap_or_default();
    let own = format!(
        "name = \"{name}\"\nversion = \"0.1.0\"\ndependencies = [\n \"sluice-plugin-sdk\",\n]\n"
    );
    let mut packages: Vec<String> = parts.map(str::to_string).collect();
    packages.push(own);
    let key = |p: &String| p.lines().next().unwrap_or_default().to_string();
    packages.sort_by_key(key);
    let mut out = head.to_string();
    for p in &packages {
        out.push_str("\n[[package]]\n");
        out.push_str(p);
        if !p.ends_with('\n') {
            out.push('\n');
        }
    }
    out
}

/// The Python SDK package, file by file (its `wit/` copy is [`WIT`]).
const PY_SDK: &[(&str, &str)] = &[
    (
        "__init__.py",
        include_str!("../../../../plugin-sdk-python/sluice_plugin/__init__.py"),
    ),
    (
        "view.py",
        include_str!("../../../../plugin-sdk-python/sluice_plugin/view.py"),
    ),
    (
        "kv.py",
        include_str!("../../../../plugin-sdk-python/sluice_plugin/kv.py"),
    ),
    (
        "dns.py",
        include_str!("../../../../plugin-sdk-python/sluice_plugin/dns.py"),
    ),
    (
        "componentize-py.toml",
        include_str!("../../../../plugin-sdk-python/sluice_plugin/componentize-py.toml"),
    ),
    ("wit/sluice-filter.wit", WIT),
];
/// The JavaScript SDK, file by file: the module, its kv and dns companions, their types.
const JS_SDK: &[(&str, &str)] = &[
    (
        "sluice-plugin.js",
        include_str!("../../../../plugin-sdk-js/sluice-plugin.js"),
    ),
    (
        "sluice-plugin.d.ts",
        include_str!("../../../../plugin-sdk-js/sluice-plugin.d.ts"),
    ),
    (
        "sluice-plugin-kv.js",
        include_str!("../../../../plugin-sdk-js/sluice-plugin-kv.js"),
    ),
    (
        "sluice-plugin-kv.d.ts",
        include_str!("../../../../plugin-sdk-js/sluice-plugin-kv.d.ts"),
    ),
    (
        "sluice-plugin-dns.js",
        include_str!("../../../../plugin-sdk-js/sluice-plugin-dns.js"),
    ),
    (
        "sluice-plugin-dns.d.ts",
        include_str!("../../../../plugin-sdk-js/sluice-plugin-dns.d.ts"),
    ),
];
/// The Rust SDK's sources (a test checks the list is complete).
const RUST_SDK: &[(&str, &str)] = &[
    (
        "address.rs",
        include_str!("../../../../plugin-sdk/src/address.rs"),
    ),
    (
        "config.rs",
        include_str!("../../../../plugin-sdk/src/config.rs"),
    ),
    ("dns.rs", include_str!("../../../../plugin-sdk/src/dns.rs")),
    (
        "export.rs",
        include_str!("../../../../plugin-sdk/src/export.rs"),
    ),
    (
        "host.rs",
        include_str!("../../../../plugin-sdk/src/host.rs"),
    ),
    ("kv.rs", include_str!("../../../../plugin-sdk/src/kv.rs")),
    ("lib.rs", include_str!("../../../../plugin-sdk/src/lib.rs")),
    ("log.rs", include_str!("../../../../plugin-sdk/src/log.rs")),
    ("net.rs", include_str!("../../../../plugin-sdk/src/net.rs")),
    (
        "testing.rs",
        include_str!("../../../../plugin-sdk/src/testing.rs"),
    ),
    (
        "verdict.rs",
        include_str!("../../../../plugin-sdk/src/verdict.rs"),
    ),
    (
        "view.rs",
        include_str!("../../../../plugin-sdk/src/view.rs"),
    ),
];

const HOOKS: [&str; 3] = ["verify-sender", "check-recipient", "check-message"];

/// The language of a new plugin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Lang {
    /// Rust, with the Rust SDK (cargo, target wasm32-wasip2).
    Rust,
    /// Python, with the Python SDK (componentize-py 0.25).
    Python,
    /// JavaScript, with the JavaScript SDK (componentize-js 0.23).
    Js,
}

fn fill(template: &str, vars: &[(&str, &str)]) -> String {
    // Two passes: the hook snippets put in by the first pass have placeholders of their own.
    let mut out = template.to_string();
    for _ in 0..2 {
        for (k, v) in vars {
            out = out.replace(&format!("{{{{{k}}}}}"), v);
        }
    }
    out
}

fn write(root: &Path, rel: &str, text: &str, executable: bool) -> anyhow::Result<()> {
    let path = root.join(rel);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    if executable {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
    }
    Ok(())
}

/// Creates the plugin `name` in `dir/name`.
pub fn run(name: &str, lang: Lang, hooks: &[String], dir: &Path) -> anyhow::Result<ExitCode> {
    if !sluice::config::valid_plugin_name(name) || name.starts_with(|c: char| c.is_ascii_digit()) {
        bail!("{name:?}: a plugin name is letters, digits, '-' and '_', starting with a letter");
    }
    let hooks: Vec<&str> = if hooks.is_empty() {
        vec!["check-recipient", "check-message"]
    } else {
        hooks.iter().map(String::as_str).collect()
    };
    if let Some(h) = hooks.iter().find(|h| !HOOKS.contains(h)) {
        bail!("--hooks {h}: the scaffold knows {}", HOOKS.join(", "));
    }
    let root: PathBuf = dir.join(name);
    if root.exists() {
        bail!(
            "{} exists already; choose another name or --dir",
            root.display()
        );
    }
    let ty: String = name
        .split(['-', '_'])
        .map(|w| {
            let mut c = w.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
        .collect();
    let has = |h: &str| hooks.contains(&h);
    let pick = |parts: [(&str, &str); 3]| -> String {
        parts
            .iter()
            .filter(|(h, _)| has(h))
            .map(|(_, t)| *t)
            .collect::<String>()
    };
    let lang_name = match lang {
        Lang::Rust => "Rust",
        Lang::Python => "Python",
        Lang::Js => "JavaScript",
    };
    let rust_hooks = pick([
        ("verify-sender", include_str!("scaffold/rust_verify.txt")),
        ("check-recipient", include_str!("scaffold/rust_rcpt.txt")),
        ("check-message", include_str!("scaffold/rust_message.txt")),
    ]);
    let py_hooks = pick([
        ("verify-sender", include_str!("scaffold/py_verify.txt")),
        ("check-recipient", include_str!("scaffold/py_rcpt.txt")),
        ("check-message", include_str!("scaffold/py_message.txt")),
    ]);
    let js_hooks = pick([
        ("verify-sender", include_str!("scaffold/js_verify.txt")),
        ("check-recipient", include_str!("scaffold/js_rcpt.txt")),
        ("check-message", include_str!("scaffold/js_message.txt")),
    ]);
    let refusal = if has("check-recipient") {
        "refused=$(run noreply@example.org)\necho \"$refused\"\ngrep -q '\"code\":550' <<<\"$refused\" || { echo \"check: noreply@example.org was not refused\" >&2; exit 1; }\n"
    } else {
        ""
    };
    let crate_file = name.replace('-', "_");
    let (notes, build) = match lang {
        Lang::Rust => (
            "Needs Rust (rustup); `build.sh` adds the `wasm32-wasip2` target. `cargo test` runs the\nplugin's own tests natively (the SDK's `testing` module answers the host's calls).".to_string(),
            format!("#!/usr/bin/env bash\n# Builds {name}.wasm.\nset -euo pipefail\ncd \"$(dirname \"$0\")\"\nrustup target add wasm32-wasip2 >/dev/null 2>&1 || true\ncargo build --release --target wasm32-wasip2\n# cargo names the file after the crate, with underscores; the plugin's name is its file name.\ncp \"${{CARGO_TARGET_DIR:-target}}/wasm32-wasip2/release/{crate_file}.wasm\" {name}.wasm\necho \"built {name}.wasm\" >&2\n"),
        ),
        Lang::Python => (
            "Needs componentize-py 0.25 (`python3 -m venv .venv && .venv/bin/pip install componentize-py==0.25.1`;\n`build.sh` uses `.venv/bin/componentize-py` when present, else `$COMPONENTIZE_PY` or the one on PATH).\nThe SDK is `sdk/sluice_plugin` (also installable with pip from Sluice's `plugin-sdk-python`).".to_string(),
            format!("#!/usr/bin/env bash\n# Builds {name}.wasm.\nset -euo pipefail\ncd \"$(dirname \"$0\")\"\ncpy=\"${{COMPONENTIZE_PY:-}}\"\n[ -n \"$cpy\" ] || {{ [ -x .venv/bin/componentize-py ] && cpy=.venv/bin/componentize-py; }} || cpy=componentize-py\n\"$cpy\" -w plugin componentize app -p . -p sdk -o {name}.wasm.tmp >/dev/null\nmv {name}.wasm.tmp {name}.wasm\necho \"built {name}.wasm\" >&2\n"),
        ),
        Lang::Js => (
            "Needs Node.js: `npm install` installs the pinned componentize-js (`build.sh` uses\n`$COMPONENTIZE_JS` instead when set). The SDK is `sdk/sluice-plugin.js`.".to_string(),
            format!("#!/usr/bin/env bash\n# Builds {name}.wasm.\nset -euo pipefail\ncd \"$(dirname \"$0\")\"\ncjs=\"${{COMPONENTIZE_JS:-node_modules/.bin/componentize-js}}\"\n[ -x \"$cjs\" ] || {{ echo \"componentize-js is missing: run npm install\" >&2; exit 1; }}\n# No wasi:http: Sluice gives plugins no network.\n\"$cjs\" plugin.js -w wit -n plugin -d http fetch-event -o {name}.wasm.tmp >/dev/null\nmv {name}.wasm.tmp {name}.wasm\necho \"built {name}.wasm\" >&2\n"),
        ),
    };
    let vars = [
        ("NAME", name),
        ("TYPE", ty.as_str()),
        ("LANG", lang_name),
        ("LANG_NOTES", notes.as_str()),
        ("RUST_HOOKS", rust_hooks.as_str()),
        ("PY_HOOKS", py_hooks.as_str()),
        ("JS_HOOKS", js_hooks.as_str()),
        ("REFUSAL_CHECK", refusal),
    ];
    std::fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;
    // componentize-js reads the WIT from `wit/`; the Rust SDK and the Python SDK carry their
    // own copy.
    if lang == Lang::Js {
        write(&root, "wit/sluice-filter.wit", WIT, false)?;
    }
    write(
        &root,
        "README.md",
        &fill(include_str!("scaffold/readme.md.txt"), &vars),
        false,
    )?;
    write(
        &root,
        "check.sh",
        &fill(include_str!("scaffold/check.sh.txt"), &vars),
        true,
    )?;
    write(&root, "build.sh", &build, true)?;
    write(
        &root,
        "sluice.toml",
        &format!(
            "# Settings for {name}: add this to Sluice's configuration.\n[plugin.{name}]\ntimeout_ms = {}\nmemory_mb = {}\n\n[plugin.{name}.config]\nblocked_local_parts = [\"noreply\"]\n",
            if lang == Lang::Rust { 200 } else { 1000 },
            if lang == Lang::Rust { 64 } else { 128 }
        ),
        false,
    )?;
    write(
        &root,
        "sample.eml",
        "From: Alice <alice@example.com>\r\nTo: someone@example.org\r\nSubject: Hello\r\nMessage-ID: <sample@example.com>\r\nDate: Mon, 30 Nov 2026 10:00:00 +0000\r\n\r\nA sample message for ./check.sh.\r\n",
        false,
    )?;
    // The language's own files: (path in the folder, text).
    let files: Vec<(String, String)> = match lang {
        Lang::Rust => {
            let mut files = vec![
                ("Cargo.toml".into(), format!(
                    "[package]\nname = \"{name}\"\nversion = \"0.1.0\"\nedition = \"2024\"\n\n[lib]\ncrate-type = [\"cdylib\"]\n\n[dependencies]\nsluice-plugin-sdk = {{ path = \"sdk/sluice-plugin-sdk\" }}\n\n[profile.release]\nlto = true\nopt-level = 3\ncodegen-units = 1\nstrip = \"debuginfo\"\n\n# A plugin folder is its own workspace, also when created inside another project.\n[workspace]\n"
                )),
                ("src/lib.rs".into(), fill(include_str!("scaffold/rust_lib.rs.txt"), &vars)),
                ("sdk/wit/sluice-filter.wit".into(), WIT.into()),
                ("sdk/sluice-plugin-sdk/Cargo.toml".into(), "[package]\nname = \"sluice-plugin-sdk\"\ndescription = \"Write Sluice mail-filter plugins in Rust\"\nversion = \"0.1.4\"\nedition = \"2024\"\nlicense = \"Apache-2.0\"\n\n[dependencies]\nwit-bindgen = \"0.46\"\n".into()),
                (".gitignore".into(), "/target\n*.wasm\n".into()),
                ("Cargo.lock".into(), cargo_lock(name)),
            ];
            files.extend(RUST_SDK.iter().map(|(file, text)| {
                (
                    format!("sdk/sluice-plugin-sdk/src/{file}"),
                    text.to_string(),
                )
            }));
            files
        }
        Lang::Python => vec![
            (
                "app.py".into(),
                fill(include_str!("scaffold/python_app.py.txt"), &vars),
            ),
            (".gitignore".into(), "/.venv\n*.wasm\n__pycache__/\n".into()),
        ],
        Lang::Js => vec![
            (
                "plugin.js".into(),
                fill(include_str!("scaffold/js_plugin.js.txt"), &vars),
            ),
            (
                "package.json".into(),
                format!(
                    "{{\n  \"name\": \"{name}\",\n  \"private\": true,\n  \"type\": \"module\",\n  \"devDependencies\": {{\n    \"@bytecodealliance/componentize-js\": \"0.23.0\",\n    \"@bytecodealliance/preview2-shim\": \"0.17.9\"\n  }}\n}}\n"
                ),
            ),
            (".gitignore".into(), "/node_modules\n*.wasm\n".into()),
        ],
    };
    let sdk: Vec<(String, String)> = match lang {
        Lang::Rust => Vec::new(),
        Lang::Python => PY_SDK
            .iter()
            .map(|(f, t)| (format!("sdk/sluice_plugin/{f}"), t.to_string()))
            .collect(),
        Lang::Js => JS_SDK
            .iter()
            .map(|(f, t)| (format!("sdk/{f}"), t.to_string()))
            .collect(),
    };
    for (path, text) in files.iter().chain(&sdk) {
        write(&root, path, text, false)?;
    }
    println!(
        "created {} ({lang_name}, hooks: {})",
        root.display(),
        hooks.join(", ")
    );
    println!("next: cd {} && ./build.sh && ./check.sh", root.display());
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_rust_sdk_source_is_copied() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../plugin-sdk/src");
        let mut files: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        files.sort();
        let copied: Vec<&str> = super::RUST_SDK.iter().map(|(f, _)| *f).collect();
        assert_eq!(files, copied);
    }
}
