//! The `libra-bench` binary: a thin shell over the bench library's command line.

use clap::Parser;

fn main() {
    std::process::exit(libra_bench::main(libra_bench::BenchArgs::parse()));
}
