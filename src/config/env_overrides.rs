//! `LIBRA_WORKER__SECTION__KEY=value` environment variables laid over the file
//! configuration before it is checked (what systemd drop-ins and containers set).

use super::*;

/// Lays `LIBRA_WORKER__SECTION__KEY=value` variables over the file configuration.
pub(super) fn apply_env(
    file: FileConfig,
    env: &[(String, String)],
) -> Result<FileConfig, ConfigError> {
    let prefix = format!("{ENV_PREFIX}__");
    let mut builder = config::Config::builder().add_source(
        config::Config::try_from(&file).map_err(|e| invalid("configuration", e.to_string()))?,
    );
    for (name, value) in env {
        let Some(rest) = name.strip_prefix(&prefix) else {
            continue;
        };
        let key = rest.to_ascii_lowercase().replace("__", ".");
        builder = builder
            .set_override(key.as_str(), value.as_str())
            .map_err(|e| invalid("environment", format!("{name}: {e}")))?;
    }
    builder
        .build()
        .and_then(|c| c.try_deserialize())
        .map_err(|e| ConfigError::Section {
            section: "environment".to_string(),
            problem: e.to_string(),
        })
}
