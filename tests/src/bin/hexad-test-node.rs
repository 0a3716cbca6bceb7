//! The `hexad-node` entry point, built inside this package so that its integration tests
//! find it through `CARGO_BIN_EXE_hexad-test-node`.
fn main() {
    std::process::exit(hexad_node::cli::main());
}
