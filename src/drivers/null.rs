//! The null driver: implements no load-balancer operation, so every such action answers
//! "<ACTION> is not supported by the null driver". Useful to run the worker's Gearman
//! and JSON path alone (benchmarks, tests of the actor core).

use super::LoadBalancerDriver;

#[derive(Debug, Default)]
pub struct NullDriver;

impl LoadBalancerDriver for NullDriver {
    fn name(&self) -> &'static str {
        "null"
    }
}
