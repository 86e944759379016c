//! The `libra-worker` binary: a thin shell over the library's command line.

fn main() {
    // A crash-test build reads `FAILPOINTS=<name>=return` here; others compile nothing.
    #[cfg(feature = "failpoints")]
    let _crash_points = fail::FailScenario::setup();
    std::process::exit(libra_worker::cli::main());
}
