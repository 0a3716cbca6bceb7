fn main() {
    std::process::exit(hexad_node::cli::main());
}
