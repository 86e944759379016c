//! The ledger's own tests: billing across reports, reloads, crashes and bad files.

use super::*;
use chrono::TimeZone;
use std::os::unix::fs::PermissionsExt;

pub(super) fn at(h: u32, m: u32, s: u32, micros: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2014, 1, 9, h, m, s).unwrap()
        + chrono::Duration::microseconds(micros.into())
}

pub(super) fn http(pid: u32, bout: u64) -> Sample {
    Sample {
        protocol: Protocol::Http,
        pid,
        bout,
    }
}

pub(super) fn tcp(pid: u32, bout: u64) -> Sample {
    Sample {
        protocol: Protocol::Tcp,
        pid,
        bout,
    }
}

pub(super) fn bytes(stats: &Statistics, protocol: Protocol) -> Option<u64> {
    stats
        .usage
        .iter()
        .find(|u| u.protocol == protocol)
        .map(|u| u.bytes_out)
}

pub(super) fn fresh() -> (tempfile::TempDir, PathBuf, Ledger) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("metrics.json");
    let ledger = Ledger::load(&path).unwrap();
    (dir, path, ledger)
}

#[test]
fn first_report_counts_from_zero_and_starts_now() {
    let (_dir, _path, mut ledger) = fresh();
    let stats = ledger
        .report(
            at(15, 11, 45, 704_754),
            &[http(100, 5000), tcp(100, 70)],
            "",
        )
        .unwrap();
    assert_eq!(stats.utc_start, "2014-01-09 15:11:45.704754");
    assert_eq!(stats.utc_end, "2014-01-09 15:11:45.704754");
    assert_eq!(
        stats.usage,
        vec![
            Usage {
                protocol: Protocol::Http,
                bytes_out: 5000
            },
            Usage {
                protocol: Protocol::Tcp,
                bytes_out: 70
            }
        ]
    );
}

#[test]
fn second_report_counts_only_new_bytes_and_periods_join() {
    let (_dir, _path, mut ledger) = fresh();
    ledger
        .report(at(15, 0, 0, 1), &[http(100, 5000)], "")
        .unwrap();
    let second = ledger
        .report(at(16, 0, 0, 2), &[http(100, 5000)], "")
        .unwrap();
    assert_eq!(bytes(&second, Protocol::Http), Some(0));
    // The reference's rule: a period starts one microsecond after the last one ended.
    assert_eq!(second.utc_start, "2014-01-09 15:00:00.000002");
    assert_eq!(second.utc_end, "2014-01-09 16:00:00.000002");
    let third = ledger
        .report(at(17, 0, 0, 0), &[http(100, 5123)], "")
        .unwrap();
    assert_eq!(bytes(&third, Protocol::Http), Some(123));
    assert_eq!(third.utc_start, "2014-01-09 16:00:00.000003");
    assert_eq!(third.utc_end, "2014-01-09 17:00:00.000000");
}

#[test]
fn reload_between_reports_loses_nothing_and_counts_nothing_twice() {
    let (_dir, _path, mut ledger) = fresh();
    ledger
        .report(at(15, 0, 0, 0), &[http(100, 1000)], "")
        .unwrap();
    // 500 more bytes, then a reload: the old worker's 500 are saved.
    ledger.save_before_stop(&[http(100, 1500)]).unwrap();
    // The new worker counts from zero and has sent 40 bytes.
    let stats = ledger
        .report(at(16, 0, 0, 0), &[http(200, 40)], "")
        .unwrap();
    assert_eq!(bytes(&stats, Protocol::Http), Some(540));
    let next = ledger
        .report(at(17, 0, 0, 0), &[http(200, 50)], "")
        .unwrap();
    assert_eq!(bytes(&next, Protocol::Http), Some(10));
}

#[test]
fn a_new_process_counts_from_zero_even_past_the_old_counter() {
    let (_dir, _path, mut ledger) = fresh();
    ledger
        .report(at(15, 0, 0, 0), &[http(100, 1000), tcp(100, 1000)], "")
        .unwrap();
    // HTTP reloaded (500 saved) and TCP restarted behind our back; both new workers have
    // since sent more than the old counters held, which must not hide the change.
    ledger.save_before_stop(&[http(100, 1500)]).unwrap();
    let stats = ledger
        .report(at(16, 0, 0, 0), &[http(200, 2000), tcp(300, 5000)], "")
        .unwrap();
    assert_eq!(bytes(&stats, Protocol::Http), Some(2500));
    assert_eq!(bytes(&stats, Protocol::Tcp), Some(5000));
}

#[test]
fn several_reloads_accumulate() {
    let (_dir, _path, mut ledger) = fresh();
    ledger
        .report(at(15, 0, 0, 0), &[http(100, 1000)], "")
        .unwrap();
    ledger.save_before_stop(&[http(100, 1100)]).unwrap();
    ledger.save_before_stop(&[http(200, 30)]).unwrap();
    ledger.save_before_stop(&[http(300, 7)]).unwrap();
    let stats = ledger.report(at(16, 0, 0, 0), &[http(400, 2)], "").unwrap();
    assert_eq!(bytes(&stats, Protocol::Http), Some(100 + 30 + 7 + 2));
}

#[test]
fn crash_after_save_before_reload_counts_only_new_bytes() {
    let (_dir, path, mut ledger) = fresh();
    ledger
        .report(at(15, 0, 0, 0), &[http(100, 1000)], "")
        .unwrap();
    ledger.save_before_stop(&[http(100, 1500)]).unwrap();
    drop(ledger);
    // The worker died before reloading: the same HAProxy process kept counting.
    let mut ledger = Ledger::load(&path).unwrap();
    let stats = ledger
        .report(at(16, 0, 0, 0), &[http(100, 1600)], "")
        .unwrap();
    assert_eq!(bytes(&stats, Protocol::Http), Some(600));
}

#[test]
fn counters_going_down_without_save_count_from_zero() {
    let (_dir, _path, mut ledger) = fresh();
    ledger
        .report(at(15, 0, 0, 0), &[http(100, 1000), tcp(100, 1000)], "")
        .unwrap();
    // HAProxy restarted behind our back: a new pid, or the same pid with a lower counter.
    let stats = ledger
        .report(at(16, 0, 0, 0), &[http(300, 25), tcp(100, 30)], "")
        .unwrap();
    assert_eq!(bytes(&stats, Protocol::Http), Some(25));
    assert_eq!(bytes(&stats, Protocol::Tcp), Some(30));
    let next = ledger
        .report(at(17, 0, 0, 0), &[http(300, 26), tcp(100, 31)], "")
        .unwrap();
    assert_eq!(bytes(&next, Protocol::Http), Some(1));
    assert_eq!(bytes(&next, Protocol::Tcp), Some(1));
}

#[test]
fn removed_load_balancer_is_reported_once() {
    let (_dir, _path, mut ledger) = fresh();
    ledger
        .report(at(15, 0, 0, 0), &[http(100, 10), tcp(100, 20)], "")
        .unwrap();
    // The TCP load balancer is removed by an UPDATE: its bytes are saved first.
    ledger
        .save_before_stop(&[http(100, 15), tcp(100, 28)])
        .unwrap();
    let stats = ledger.report(at(16, 0, 0, 0), &[http(200, 1)], "").unwrap();
    assert_eq!(bytes(&stats, Protocol::Http), Some(6));
    assert_eq!(bytes(&stats, Protocol::Tcp), Some(8));
    let next = ledger.report(at(17, 0, 0, 0), &[http(200, 1)], "").unwrap();
    assert_eq!(bytes(&next, Protocol::Tcp), None);
    assert_eq!(next.usage.len(), 1);
}

#[test]
fn a_counter_missing_once_is_not_counted_twice() {
    let (_dir, _path, mut ledger) = fresh();
    ledger
        .report(at(15, 0, 0, 0), &[http(100, 10), tcp(100, 20)], "")
        .unwrap();
    let stats = ledger
        .report(at(16, 0, 0, 0), &[http(100, 11)], "")
        .unwrap();
    assert_eq!(bytes(&stats, Protocol::Tcp), None);
    let next = ledger
        .report(at(17, 0, 0, 0), &[http(100, 11), tcp(100, 25)], "")
        .unwrap();
    assert_eq!(bytes(&next, Protocol::Tcp), Some(5));
}

#[test]
fn state_survives_load_and_file_is_private() {
    let (_dir, path, mut ledger) = fresh();
    ledger
        .report(at(15, 0, 0, 42), &[http(100, 1000)], "")
        .unwrap();
    ledger.save_before_stop(&[http(100, 1200)]).unwrap();
    drop(ledger);
    assert_eq!(
        fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let mut ledger = Ledger::load(&path).unwrap();
    let stats = ledger.report(at(16, 0, 0, 0), &[http(200, 3)], "").unwrap();
    assert_eq!(stats.utc_start, "2014-01-09 15:00:00.000043");
    assert_eq!(bytes(&stats, Protocol::Http), Some(203));
    let mut ledger = Ledger::load(&path).unwrap();
    let again = ledger.report(at(17, 0, 0, 0), &[http(200, 3)], "").unwrap();
    assert_eq!(bytes(&again, Protocol::Http), Some(0));
    assert_eq!(again.utc_start, "2014-01-09 16:00:00.000001");
    assert!(!path.with_file_name("metrics.json.tmp").exists());
}

#[test]
fn a_stale_tmp_file_does_not_leak_its_rights() {
    let (_dir, path, mut ledger) = fresh();
    let tmp = path.with_file_name("metrics.json.tmp");
    fs::write(&tmp, "leftover").unwrap();
    fs::set_permissions(&tmp, fs::Permissions::from_mode(0o644)).unwrap();
    ledger.report(at(15, 0, 0, 0), &[http(100, 1)], "").unwrap();
    assert_eq!(
        fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert!(!tmp.exists());
}

#[test]
fn timestamps_have_microseconds_and_never_run_backwards() {
    let (_dir, _path, mut ledger) = fresh();
    let stats = ledger.report(at(9, 5, 7, 3), &[], "").unwrap();
    assert_eq!(stats.utc_end, "2014-01-09 09:05:07.000003");
    assert!(NaiveDateTime::parse_from_str(&stats.utc_end, "%Y-%m-%d %H:%M:%S%.f").is_ok());
    // Nanoseconds are cut, not rounded into a different period boundary.
    let t =
        Utc.with_ymd_and_hms(2014, 1, 9, 10, 0, 0).unwrap() + chrono::Duration::nanoseconds(1_999);
    let stats = ledger.report(t, &[], "").unwrap();
    assert_eq!(stats.utc_end, "2014-01-09 10:00:00.000001");
    let back = ledger.report(at(8, 0, 0, 0), &[], "").unwrap();
    assert_eq!(back.utc_start, "2014-01-09 10:00:00.000002");
    assert_eq!(back.utc_end, back.utc_start);
}

#[test]
fn forget_all_starts_afresh() {
    let (_dir, path, mut ledger) = fresh();
    ledger
        .report(at(15, 0, 0, 0), &[http(100, 1000)], "")
        .unwrap();
    ledger.save_before_stop(&[http(100, 1200)]).unwrap();
    ledger.forget_all().unwrap();
    let mut ledger = Ledger::load(&path).unwrap();
    let stats = ledger
        .report(at(16, 0, 0, 0), &[http(100, 1300)], "")
        .unwrap();
    assert_eq!(stats.utc_start, "2014-01-09 16:00:00.000000");
    assert_eq!(bytes(&stats, Protocol::Http), Some(1300));
}

#[test]
fn corrupt_files_are_errors_that_say_so() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("metrics.json");
    for bad in [
        "not json",
        r#"{"version":2,"last_end":null,"protocols":{}}"#,
        r#"{"version":1,"last_end":"yesterday","protocols":{}}"#,
        r#"{"version":1,"last_end":null,"protocols":{"UDP":{"pid":1,"bout":1,"unreported":0}}}"#,
        r#"{"version":1,"last_end":null,"protocols":{"HTTP":{"pid":1,"bout":-1,"unreported":0}}}"#,
        r#"{"version":1,"last_end":null,"protocols":{"HTTP":{"pid":1,"bout":1,"unreported":0},"http":{"pid":1,"bout":1,"unreported":0}}}"#,
    ] {
        fs::write(&path, bad).unwrap();
        let err = Ledger::load(&path).unwrap_err();
        assert!(matches!(err, LedgerError::Corrupt { .. }), "{bad}: {err:?}");
        assert!(err.to_string().contains("corrupt"), "{err}");
    }
}

#[test]
fn duplicate_samples_are_refused_without_change() {
    let (_dir, path, mut ledger) = fresh();
    ledger
        .report(at(15, 0, 0, 0), &[http(100, 10)], "")
        .unwrap();
    assert!(matches!(
        ledger.report(at(16, 0, 0, 0), &[http(100, 20), http(100, 30)], ""),
        Err(LedgerError::DuplicateSample(Protocol::Http))
    ));
    assert!(ledger.save_before_stop(&[tcp(1, 1), tcp(1, 2)]).is_err());
    let stats = Ledger::load(&path)
        .unwrap()
        .report(at(16, 0, 0, 0), &[http(100, 30)], "")
        .unwrap();
    assert_eq!(bytes(&stats, Protocol::Http), Some(20));
}

#[test]
fn a_failed_write_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("missing-dir").join("metrics.json");
    let mut ledger = Ledger::load(&path).unwrap();
    let err = ledger
        .report(at(15, 0, 0, 0), &[http(100, 10)], "")
        .unwrap_err();
    assert!(matches!(err, LedgerError::Store { .. }), "{err:?}");
    fs::create_dir(path.parent().unwrap()).unwrap();
    let stats = ledger
        .report(at(16, 0, 0, 0), &[http(100, 10)], "")
        .unwrap();
    assert_eq!(bytes(&stats, Protocol::Http), Some(10));
    assert_eq!(stats.utc_start, "2014-01-09 16:00:00.000000");
}

#[test]
fn galera_is_billed_as_tcp() {
    let (_dir, path, mut ledger) = fresh();
    let galera = |pid, bout| Sample {
        protocol: Protocol::Galera,
        pid,
        bout,
    };
    ledger
        .report(at(15, 0, 0, 0), &[galera(100, 1000)], "")
        .unwrap();
    // The tcp load balancer turns from GALERA into TCP: one reload, one bill.
    ledger.save_before_stop(&[galera(100, 1500)]).unwrap();
    let stats = ledger.report(at(16, 0, 0, 0), &[tcp(200, 40)], "").unwrap();
    assert_eq!(
        stats.usage,
        vec![Usage {
            protocol: Protocol::Tcp,
            bytes_out: 540
        }]
    );
    assert!(!fs::read_to_string(&path).unwrap().contains("GALERA"));
}

#[test]
fn files_that_kept_galera_apart_are_merged_into_tcp() {
    let (_dir, path, _) = fresh();
    fs::write(
        &path,
        r#"{"version":1,"last_end":null,"protocols":{
            "GALERA":{"pid":100,"bout":1500,"unreported":500},
            "TCP":{"pid":200,"bout":40,"unreported":7}}}"#,
    )
    .unwrap();
    let mut ledger = Ledger::load(&path).unwrap();
    let stats = ledger
        .report(at(16, 0, 0, 0), &[tcp(100, 1600)], "")
        .unwrap();
    assert_eq!(bytes(&stats, Protocol::Tcp), Some(100 + 507));
}

#[test]
fn a_job_handed_out_again_gets_the_same_report() {
    let (_dir, path, mut ledger) = fresh();
    ledger
        .report(at(15, 0, 0, 0), &[http(100, 1000)], "job-1")
        .unwrap();
    let first = ledger
        .report(at(16, 0, 0, 0), &[http(100, 1500)], "job-2")
        .unwrap();
    assert_eq!(bytes(&first, Protocol::Http), Some(500));
    // The worker died after writing job-2's report, before answering: the job server
    // hands job-2 to the next worker, which must answer it the same, not with 0 bytes.
    let mut restarted = Ledger::load(&path).unwrap();
    let again = restarted
        .report(at(16, 0, 1, 0), &[http(100, 1600)], "job-2")
        .unwrap();
    assert_eq!(again, first);
    // The next job gets what came since job-2's report, once.
    let next = restarted
        .report(at(17, 0, 0, 0), &[http(100, 1600)], "job-3")
        .unwrap();
    assert_eq!(bytes(&next, Protocol::Http), Some(100));
    // Without an id there is nothing to recognise: every call is a new report.
    let anon = restarted
        .report(at(18, 0, 0, 0), &[http(100, 1600)], "")
        .unwrap();
    let anon2 = restarted
        .report(at(18, 0, 0, 1), &[http(100, 1600)], "")
        .unwrap();
    assert_ne!(anon.utc_end, anon2.utc_end);
}
