//! The one wasmtime [`Engine`] of the process and the [`Linker`] every plugin is linked with.
//!
//! Modelled on `wasmtime serve`: compile each component once, pre-instantiate once, and give
//! every transaction a fresh `Store` from the pooling allocator. A background thread ticks the
//! engine's epoch so that hook deadlines are enforced even in a guest's tight loop.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use wasmtime::component::Linker;
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use super::cache::CompileCache;
use super::capabilities::Services;
use super::state::StoreState;

/// How often the epoch advances: the granularity of hook deadlines, and how often a running
/// guest yields to the async executor.
pub const EPOCH_TICK: Duration = Duration::from_millis(2);

/// Pool sizing, from `[plugins]` in the configuration.
#[derive(Debug, Clone, Copy)]
pub struct PoolSize {
    /// Largest linear memory any plugin may have, in bytes.
    pub max_memory_bytes: u64,
    /// Plugin instances alive at once.
    pub max_instances: u32,
    /// Threads that run plugin code ([`super::executor`]).
    pub threads: usize,
}

/// The engine, the linker and the compile cache, shared by every plugin.
#[derive(Clone)]
pub struct Runtime {
    /// The wasmtime engine (cheap to clone).
    pub engine: Engine,
    /// Links WASI (default-deny) and the `sluice:filter/host` imports.
    pub linker: Arc<Linker<StoreState>>,
    /// Compiled components on disk.
    pub cache: CompileCache,
    /// The store and resolver behind the capabilities plugins may be granted.
    pub services: Services,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("cache", &self.cache)
            .finish()
    }
}

impl Runtime {
    /// Builds the engine and linker and starts the epoch ticker. `cache_dir` is created if
    /// missing.
    pub fn new(pool: PoolSize, cache_dir: &Path) -> anyhow::Result<Runtime> {
        let mut config = Config::new();
        config.epoch_interruption(true);
        config.wasm_component_model(true);
        config.cranelift_opt_level(wasmtime::OptLevel::Speed);
        // For profiling plugins: `perf` then names the guests' functions (/tmp/perf-PID.map).
        if std::env::var_os("SLUICE_PERFMAP").is_some() {
            config.profiler(wasmtime::ProfilingStrategy::PerfMap);
        }

        let instances = pool.max_instances;
        let mut pooling = PoolingAllocationConfig::new();
        pooling
            .total_component_instances(instances)
            // Interpreted guests (Python, JavaScript) are components of many core modules, each
            // with its own memories and tables.
            .total_core_instances(instances.saturating_mul(16))
            .total_memories(instances.saturating_mul(4))
            .total_tables(instances.saturating_mul(8))
            .total_stacks(instances)
            .max_memories_per_module(2)
            .max_tables_per_module(4)
            // One plugin instance may take at most its share of the pool's core instances,
            // memories and tables, so no plugin can starve the others.
            .max_core_instances_per_component(16)
            .max_memories_per_component(4)
            .max_tables_per_component(8)
            .table_elements(200_000)
            .max_core_instance_size(8 << 20)
            .max_component_instance_size(8 << 20)
            .max_memory_size(usize::try_from(pool.max_memory_bytes).unwrap_or(usize::MAX))
            .max_unused_warm_slots(64)
            // Reset a used slot by rewriting the pages the guest touched (found with the
            // PAGEMAP_SCAN ioctl where the kernel has it) instead of `madvise`: an madvise of
            // a multi-threaded process is a TLB shoot-down on every core, and the next guest
            // in the slot takes its page faults again. The profile of the load benchmark had
            // them as the largest cost of the plugin chain after the guests' own code.
            .linear_memory_keep_resident(16 << 20)
            .table_keep_resident(1 << 20)
            .pagemap_scan(wasmtime::Enabled::Auto)
            // A freed slot is reset at once and is the next one its plugin gets. In batches
            // (16 were tried) every instance until the batch fills takes another slot, each
            // keeping its touched pages resident: peak memory with the Python and JavaScript
            // examples under load was 240-600 MiB from run to run, and 240-250 MiB since.
            .decommit_batch_size(1);
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pooling));

        let engine = Engine::new(&config)?;
        super::executor::start(pool.threads);
        spawn_epoch_ticker(&engine);

        let mut linker = Linker::<StoreState>::new(&engine);
        super::state::add_to_linker(&mut linker)?;

        let cache = CompileCache::new(&engine, cache_dir)?;
        Ok(Runtime {
            engine,
            linker: Arc::new(linker),
            cache,
            services: Services::default(),
        })
    }

    /// This runtime with the store and resolver that back the `kv` and `dns` capabilities.
    pub fn with_services(mut self, services: Services) -> Runtime {
        self.services = services;
        self
    }
}

/// Advances the epoch every [`EPOCH_TICK`] until the engine is dropped.
fn spawn_epoch_ticker(engine: &Engine) {
    let weak = engine.weak();
    std::thread::Builder::new()
        .name("sluice-epoch".into())
        .spawn(move || {
            while let Some(engine) = weak.upgrade() {
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(EPOCH_TICK);
            }
        })
        .expect("spawning the epoch thread");
}
