//! The compile cache: a second load does not compile, and a damaged entry is recompiled.

use sluice::plugin::Runtime;
use sluice::plugin::cache::CacheOutcome;
use sluice::plugin::engine::PoolSize;
use sluice_tests::*;

fn runtime_at(dir: &std::path::Path) -> Runtime {
    Runtime::new(
        PoolSize {
            max_memory_bytes: 64 << 20,
            max_instances: 8,
            threads: 1,
        },
        dir,
    )
    .unwrap()
}

#[tokio::test]
async fn second_load_hits_and_corrupt_entries_are_recompiled() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config("");
    let file = plugin("test", "tagger");

    let first = load_one(&runtime_at(dir.path()), &cfg, "tagger", &file)
        .await
        .unwrap();
    assert_eq!(first.cache, CacheOutcome::Miss);
    let second = load_one(&runtime_at(dir.path()), &cfg, "tagger", &file)
        .await
        .unwrap();
    assert_eq!(second.cache, CacheOutcome::Hit);

    // Damage every cached artefact: the checksum catches it and the plugin still loads.
    let mut damaged = 0;
    for engine_dir in std::fs::read_dir(dir.path()).unwrap() {
        for entry in std::fs::read_dir(engine_dir.unwrap().path()).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|x| x != "cwasm") {
                continue; // the compile lock
            }
            let mut bytes = std::fs::read(&path).unwrap();
            let mid = bytes.len() / 2;
            bytes[mid] ^= 0xff;
            std::fs::write(&path, bytes).unwrap();
            damaged += 1;
        }
    }
    assert_eq!(damaged, 1);
    let third = load_one(&runtime_at(dir.path()), &cfg, "tagger", &file)
        .await
        .unwrap();
    assert_eq!(third.cache, CacheOutcome::Miss);
    let p = sluice::pipeline::Pipeline::new(vec![third], cfg.scoring.clone());
    let env = envelope("a@example.org", &["b@example.net"]);
    let out = p
        .start(&client(), "t")
        .check_message(&env, &message("s", "b"))
        .await;
    assert_eq!(out.symbols[0].name, "TAGGED");
    let fourth = load_one(&runtime_at(dir.path()), &cfg, "tagger", &file)
        .await
        .unwrap();
    assert_eq!(fourth.cache, CacheOutcome::Hit);
}

/// `sluice plugin compile` fills the server's cache ahead of its start (what ./run does), and a
/// server that compiles says so first, plugin by plugin.
#[tokio::test]
async fn plugins_compiled_ahead_load_at_once_and_a_compiling_server_says_how_far_it_got() {
    let dir = tempfile::tempdir().unwrap();
    let plugins = dir.path().join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    std::fs::copy(plugin("test", "tagger"), plugins.join("10-tagger.wasm")).unwrap();
    std::fs::copy(plugin("test", "auth-echo"), plugins.join("20-echo.wasm")).unwrap();
    let cfg = dir.path().join("sluice.toml");
    std::fs::write(
        &cfg,
        format!(
            "[server]\nhostname = \"mx.test\"\ndata_dir = {:?}\n[[listener]]\nkind = \"smtp\"\naddress = \"127.0.0.1:0\"\n[relay]\nlocal_domains = [\"example.org\"]\n[authentication]\nverify = false\n",
            dir.path()
        ),
    )
    .unwrap();
    let cli = |args: &[&str]| {
        std::process::Command::new(sluice_bin())
            .args(["plugin", "compile", "--config"])
            .arg(&cfg)
            .args(args)
            .output()
            .unwrap()
    };
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();

    // A first server start compiles, and says so before each plugin.
    let server = sluice_tests::serve::Serve::start(&cfg).await;
    drop(server);
    let log = std::fs::read_to_string(cfg.with_extension("log")).unwrap();
    assert!(
        log.contains("compiling 2 of 2 plugins for this machine"),
        "{log}"
    );
    assert!(
        log.contains("compiling plugin 1/2") && log.contains("plugin=tagger"),
        "{log}"
    );
    assert!(
        log.contains("compiling plugin 2/2") && log.contains("plugin=echo"),
        "{log}"
    );

    // A new cache: nothing compiled; `--check` says so and compiles nothing.
    std::fs::remove_dir_all(dir.path().join("cache")).unwrap();
    assert_eq!(cli(&["--check"]).status.code(), Some(1));
    assert_eq!(cli(&["--check"]).status.code(), Some(1));
    let out = cli(&[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("1/2 ") && stdout.contains("10-tagger.wasm: compiled in"),
        "{stdout}"
    );
    assert!(
        stdout.contains("2/2 ") && stdout.contains("20-echo.wasm: compiled in"),
        "{stdout}"
    );
    assert_eq!(cli(&["--check"]).status.code(), Some(0));
    assert!(text(&cli(&[]).stdout).contains("10-tagger.wasm: already compiled"));

    // The server then loads them without compiling.
    let server = sluice_tests::serve::Serve::start(&cfg).await;
    drop(server);
    let log = std::fs::read_to_string(cfg.with_extension("log")).unwrap();
    assert!(!log.contains("compiling"), "{log}");
    assert!(log.contains("plugin loaded"), "{log}");

    // A file that is not a component: a clear error, exit 1, the others still compiled.
    let bogus = dir.path().join("bogus.wasm");
    std::fs::write(&bogus, b"\0asm\x01\0\0\0garbage").unwrap();
    let out = cli(&[
        bogus.to_str().unwrap(),
        plugins.join("10-tagger.wasm").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("bogus.wasm: cannot compile"),
        "{}",
        text(&out.stderr)
    );
    assert!(text(&out.stdout).contains("2/2 "), "{}", text(&out.stdout));
}

/// Two engines (two servers, or a server and `sluice plugin compile`) loading the same new
/// component at once: one compiles it, the other waits and loads its result.
#[test]
fn a_component_is_compiled_once_when_loaded_twice_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let wasm = std::fs::read(plugin("test", "hostile")).unwrap();
    let sha = hex_sha256(&wasm);
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(2));
    let outcomes: Vec<CacheOutcome> = std::thread::scope(|s| {
        let loads: Vec<_> = (0..2)
            .map(|_| {
                let (barrier, wasm, sha, dir) = (barrier.clone(), &wasm, &sha, dir.path());
                s.spawn(move || {
                    let rt = runtime_at(dir);
                    barrier.wait();
                    rt.cache.load_or_compile(&rt.engine, wasm, sha).unwrap().1
                })
            })
            .collect();
        loads.into_iter().map(|l| l.join().unwrap()).collect()
    });
    let misses = outcomes
        .iter()
        .filter(|o| **o == CacheOutcome::Miss)
        .count();
    assert_eq!(misses, 1, "{outcomes:?}");
}

fn hex_sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}
