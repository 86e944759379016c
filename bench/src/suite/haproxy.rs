//! The suite's HAProxy-driver sections, each with a worker of its own on the suite's
//! gearmand: UPDATE latency, then zero-drop (skipped with a note when wrk is not
//! installed); neither with `--no-haproxy`.

use std::fmt::Write as _;

use super::measure::Suite;
use super::SuiteError;
use crate::section::Env;

/// The JSON of the two sections (`null` for one that did not run).
pub(super) struct HaproxySections {
    pub(super) update_latency: serde_json::Value,
    pub(super) zero_drop: serde_json::Value,
}

/// Runs UPDATE latency and zero-drop unless `--no-haproxy`; appends their markdown to `md`.
pub(super) fn run(s: &Suite, md: &mut String) -> Result<HaproxySections, SuiteError> {
    let args = s.args;
    let (mut update_json, mut zero_drop_json) = (serde_json::Value::Null, serde_json::Value::Null);
    if !args.no_haproxy {
        let env = Env {
            binary: &s.binary,
            gearmand: s.gearmand.addr(),
            dir: s.dir,
        };
        let section = crate::update_latency::run(&env, args.update_count())?;
        md.push_str(&section.markdown);
        update_json = section.json;
        if crate::wrk::program().is_some() {
            let section = crate::zero_drop::run(&env, args.zero_drop_opts())?;
            md.push_str(&section.markdown);
            zero_drop_json = section.json;
        } else {
            let _ = writeln!(
                md,
                "### Zero-drop\n\nSkipped: wrk is not installed (apt-get install wrk).\n"
            );
        }
    }
    Ok(HaproxySections {
        update_latency: update_json,
        zero_drop: zero_drop_json,
    })
}
