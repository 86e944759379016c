//! The log level as a value that changes while the worker runs (SIGHUP re-reads it from
//! the configuration file): a filter in front of the async drain, so a record below the
//! level is dropped in the caller's thread instead of being serialized and sent.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use slog::{Drain, Level, OwnedKVList, Record};

/// Shared handle on the level; clones see the same value.
#[derive(Clone, Debug)]
pub struct LevelHandle(Arc<AtomicUsize>);

impl LevelHandle {
    pub fn new(level: Level) -> Self {
        LevelHandle(Arc::new(AtomicUsize::new(level.as_usize())))
    }

    pub fn get(&self) -> Level {
        Level::from_usize(self.0.load(Ordering::Relaxed)).unwrap_or(Level::Info)
    }

    pub fn set(&self, level: Level) {
        self.0.store(level.as_usize(), Ordering::Relaxed);
    }
}

/// Passes records at `level` or more important.
pub struct LevelFilter<D> {
    pub inner: D,
    pub level: LevelHandle,
}

impl<D: Drain> Drain for LevelFilter<D> {
    type Ok = Option<D::Ok>;
    type Err = D::Err;

    fn log(&self, record: &Record, values: &OwnedKVList) -> Result<Self::Ok, Self::Err> {
        if record.level().is_at_least(self.level.get()) {
            self.inner.log(record, values).map(Some)
        } else {
            Ok(None)
        }
    }

    fn is_enabled(&self, level: Level) -> bool {
        level.is_at_least(self.level.get()) && self.inner.is_enabled(level)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[derive(Clone)]
    struct Count(Arc<Mutex<usize>>);
    impl Drain for Count {
        type Ok = ();
        type Err = slog::Never;
        fn log(&self, _: &Record, _: &OwnedKVList) -> Result<(), slog::Never> {
            *self.0.lock().unwrap() += 1;
            Ok(())
        }
    }

    #[test]
    fn a_changed_level_takes_effect_on_the_next_record() {
        let count = Count(Arc::new(Mutex::new(0)));
        let level = LevelHandle::new(Level::Info);
        let log = slog::Logger::root(
            LevelFilter {
                inner: count.clone(),
                level: level.clone(),
            }
            .fuse(),
            slog::o!(),
        );
        slog::debug!(log, "hidden");
        slog::info!(log, "shown");
        assert_eq!(*count.0.lock().unwrap(), 1);
        level.set(Level::Debug);
        slog::debug!(log, "shown now");
        assert_eq!(*count.0.lock().unwrap(), 2);
        level.set(Level::Error);
        slog::warn!(log, "hidden again");
        assert_eq!(*count.0.lock().unwrap(), 2);
    }
}
