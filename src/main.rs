//! The `libra-worker` binary: a thin shell over the library's command line.

fn main() {
    std::process::exit(libra_worker::cli::main());
}
