//! Any text as a node config: it loads, or the error names the file; never a panic.
#![no_main]

use std::path::Path;

use hexad_node::config::NodeConfig;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(e) = NodeConfig::parse(text, Path::new("node.toml")) {
        assert!(e.to_string().contains("node.toml"), "{e}");
    }
});
