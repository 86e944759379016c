//! The bench's work directory: created under the system's temporary directory, removed
//! when dropped unless told to keep it (a failed run keeps its logs there).

use std::path::PathBuf;

use super::SuiteError;

/// A directory removed when dropped, unless told to keep it.
pub(crate) struct TempDir {
    pub(crate) path: PathBuf,
    pub(crate) keep: bool,
}

impl TempDir {
    pub(crate) fn create() -> Result<TempDir, SuiteError> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let path =
            std::env::temp_dir().join(format!("libra-bench-{}-{nanos:09}", std::process::id()));
        std::fs::create_dir(&path).map_err(|source| SuiteError::TempDir {
            path: path.display().to_string(),
            source,
        })?;
        Ok(TempDir { path, keep: false })
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temp_dir_is_removed_unless_kept() {
        let d = TempDir::create().unwrap();
        let path = d.path.clone();
        std::fs::write(path.join("x"), "y").unwrap();
        drop(d);
        assert!(!path.exists());
        let mut d = TempDir::create().unwrap();
        d.keep = true;
        let path = d.path.clone();
        drop(d);
        assert!(path.exists());
        std::fs::remove_dir_all(path).unwrap();
    }
}
