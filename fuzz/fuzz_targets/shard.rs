//! The fuzzer's bytes as a session of requests against one shard (`hexad_node::shard::sim`):
//! appends, fences, truncations, any message the decoder accepts, power cuts and failed
//! metadata saves, checked after every step. A broken promise or a panic is a crash.
#![no_main]

use hexad_node::shard::sim::{run_session, ByteChoices};
use libfuzzer_sys::fuzz_target;

thread_local! {
    /// One executor for every input: building one per input would dominate the run.
    static EXECUTOR: glommio::LocalExecutor = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .make()
        .expect("a glommio executor");
}

fuzz_target!(|data: &[u8]| {
    EXECUTOR.with(|ex| {
        if let Err(e) = ex.run(run_session(&mut ByteChoices(data))) {
            panic!("{e}");
        }
    });
});
