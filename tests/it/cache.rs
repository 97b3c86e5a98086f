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
