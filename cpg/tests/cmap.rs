//! The cmap handle against the shared single-node daemon: typed reads and writes of
//! every type, the typed errors (missing key, type mismatch, read-only key, names and
//! values corosync refuses), inc/dec, prefix iteration compared with
//! `corosync-cmapctl -b`, tracking of changes made by `corosync-cmapctl` and by the
//! API with their old and new values, the closures' lifetimes, the process's cap on
//! tracks, a panicking callback, the stats map's own connection, small stacks; and
//! the async stream (feature `tokio`).
//!
//! Tests that add tracks take [`serial`]: the cap on tracks is per process.

mod support;

use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cpg::cmap::{
    Change, ChangeKind, Cmap, CmapError, Map, TrackType, Value, ValueType, MAX_TRACKS,
    MAX_VALUE_LEN,
};
use cpg::{CsError, DispatchMode, Dispatched, Error, Operation, DISPATCH_STACK};
use support::{big_stack, serial, WAIT};

/// Runs `f` on a big stack inside the shared daemon's namespace.
fn on_shared<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> R {
    let node = cpg_testkit::shared();
    big_stack(move || node.enter(f))
}

/// A key prefix no other test (or test process) uses: `test.PID.TAG.`.
fn prefix(tag: &str) -> String {
    format!("test.{}.{tag}.", std::process::id())
}

/// Runs `corosync-cmapctl ARGS` on the shared node; its stdout.
fn cmapctl(args: &[&str]) -> String {
    let out = cpg_testkit::shared()
        .command("corosync-cmapctl")
        .args(args)
        .output()
        .expect("run corosync-cmapctl");
    assert!(
        out.status.success(),
        "corosync-cmapctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Dispatches `cmap` until `seen` holds `n` changes, failing after [`WAIT`].
fn pump_until(cmap: &Cmap, seen: &Mutex<Vec<Change>>, n: usize) -> Vec<Change> {
    let deadline = Instant::now() + WAIT;
    loop {
        let now = seen.lock().unwrap().clone();
        if now.len() >= n {
            return now;
        }
        assert!(Instant::now() < deadline, "only {now:#?} after {WAIT:?}");
        cmap.dispatch_timeout(Duration::from_millis(100))
            .expect("dispatch");
    }
}

/// A closure for a track that records every change into `seen`.
fn recorder(
    seen: &Arc<Mutex<Vec<Change>>>,
) -> impl FnMut(&cpg::cmap::TrackContext<'_>, Change) + Send + 'static {
    let seen = Arc::clone(seen);
    move |_, change| seen.lock().unwrap().push(change)
}

/// Nothing more arrives within a short while.
fn assert_quiet(cmap: &Cmap, seen: &Mutex<Vec<Change>>, had: usize) {
    let _ = cmap
        .dispatch_timeout(Duration::from_millis(300))
        .expect("dispatch");
    let now = seen.lock().unwrap().clone();
    assert_eq!(
        now.len(),
        had,
        "unexpected changes: {:#?}",
        &now[had.min(now.len())..]
    );
}

fn every_type() -> Vec<(&'static str, Value)> {
    vec![
        ("i8", Value::I8(-8)),
        ("u8", Value::U8(200)),
        ("i16", Value::I16(-1600)),
        ("u16", Value::U16(5405)),
        ("i32", Value::I32(-320_000)),
        ("u32", Value::U32(3_200_000_000)),
        ("i64", Value::I64(-64_000_000_000)),
        ("u64", Value::U64(u64::MAX)),
        ("flt", Value::Float(1.5)),
        ("dbl", Value::Double(-2.25)),
        ("str", Value::Str("node1 and a space".into())),
        ("bin", Value::Binary(b"bytes 0-9".to_vec())),
    ]
}

#[test]
fn every_type_round_trips_and_typed_gets_check_the_stored_type() {
    let p = prefix("types");
    on_shared(move || {
        let cmap = Cmap::new().expect("connect to cmap");
        assert_eq!(cmap.map(), Map::Main);
        for (name, value) in every_type() {
            let key = format!("{p}{name}");
            cmap.set(&key, value.clone()).unwrap();
            assert_eq!(cmap.get_value(&key).unwrap(), value, "{key}");
            // corosync stored it with this type.
            let shown = cmapctl(&["-g", &key]);
            assert!(shown.starts_with(&format!("{key} ({name})")), "{shown}");
        }
        // Typed reads of the own type.
        assert_eq!(cmap.get::<i8>(&format!("{p}i8")), Ok(-8));
        assert_eq!(cmap.get::<u16>(&format!("{p}u16")), Ok(5405));
        assert_eq!(cmap.get::<u64>(&format!("{p}u64")), Ok(u64::MAX));
        assert_eq!(cmap.get::<f32>(&format!("{p}flt")), Ok(1.5));
        assert_eq!(cmap.get::<f64>(&format!("{p}dbl")), Ok(-2.25));
        assert_eq!(
            cmap.get::<String>(&format!("{p}str")).as_deref(),
            Ok("node1 and a space")
        );
        assert_eq!(
            cmap.get::<Vec<u8>>(&format!("{p}bin")),
            Ok(b"bytes 0-9".to_vec())
        );
        // Typed reads of another type: no conversion, the key and both types named.
        let mismatch = |key: &str, stored, asked| {
            Error::Cmap(CmapError::TypeMismatch {
                key: key.into(),
                stored,
                asked,
            })
        };
        let k = format!("{p}u16");
        assert_eq!(
            cmap.get::<u32>(&k).unwrap_err(),
            mismatch(&k, ValueType::U16, ValueType::U32)
        );
        assert_eq!(
            cmap.get::<u8>(&k).unwrap_err(),
            mismatch(&k, ValueType::U16, ValueType::U8)
        );
        // A string longer than the integer asked for: found by its size, not fetched.
        let k = format!("{p}str");
        assert_eq!(
            cmap.get::<u32>(&k).unwrap_err(),
            mismatch(&k, ValueType::String, ValueType::U32)
        );
        let k = format!("{p}bin");
        assert_eq!(
            cmap.get::<String>(&k).unwrap_err(),
            mismatch(&k, ValueType::Binary, ValueType::String)
        );
        let text = cmap.get::<u32>(&k).unwrap_err().to_string();
        assert_eq!(
            text,
            format!("cmap key {k} holds a bin value, not the u32 asked for")
        );
        // Setting a key to another type replaces the type.
        cmap.set(&k, 7u8).unwrap();
        assert_eq!(cmap.get::<u8>(&k), Ok(7));
        // A value of the largest size, beyond the first read's buffer, reads back whole.
        let big = format!("{p}big");
        let bytes: Vec<u8> = (0..MAX_VALUE_LEN).map(|i| (i % 251) as u8).collect();
        cmap.set(&big, bytes.clone()).unwrap();
        assert_eq!(cmap.get::<Vec<u8>>(&big), Ok(bytes));
        let long = "s".repeat(MAX_VALUE_LEN - 1);
        cmap.set(&big, long.as_str()).unwrap();
        assert_eq!(cmap.get::<String>(&big), Ok(long));
        for (name, _) in every_type() {
            cmap.delete(&format!("{p}{name}")).unwrap();
        }
        cmap.delete(&big).unwrap();
        cmap.close().unwrap();
    });
}

#[test]
fn missing_keys_bad_names_and_bad_values_get_typed_errors() {
    let p = prefix("errors");
    on_shared(move || {
        let cmap = Cmap::new().unwrap();
        let missing = format!("{p}missing");
        let err = cmap.get::<u32>(&missing).unwrap_err();
        assert!(err.is_not_found(), "{err:?}");
        assert_eq!(
            err,
            Error::Cs {
                op: Operation::CmapGet,
                code: CsError::NotExist
            }
        );
        assert!(cmap.get_value(&missing).unwrap_err().is_not_found());
        assert!(cmap.delete(&missing).unwrap_err().is_not_found());
        assert!(cmap.inc(&missing).unwrap_err().is_not_found());

        // Names corosync never accepts are refused before they reach libcmap (which
        // would copy a name longer than 255 bytes past its request on its stack).
        for bad in [
            "ab".to_string(),
            "k".repeat(256),
            format!("{p}a b"),
            format!("{p}nul\0"),
        ] {
            for result in [
                cmap.get_value(&bad).map(|_| ()),
                cmap.set(&bad, 1u8),
                cmap.delete(&bad),
                cmap.inc(&bad),
            ] {
                assert!(
                    matches!(result, Err(Error::Cmap(CmapError::InvalidKey { .. }))),
                    "{bad:?}: {result:?}"
                );
            }
        }
        assert!(matches!(
            cmap.iter(&"p".repeat(256)),
            Err(Error::Cmap(CmapError::InvalidKey { .. }))
        ));

        // Values corosync would refuse or cut: refused here, the key unchanged.
        let key = format!("{p}value");
        cmap.set(&key, "before").unwrap();
        assert_eq!(
            cmap.set(&key, vec![0u8; MAX_VALUE_LEN + 1]),
            Err(Error::Cmap(CmapError::ValueTooLong {
                key: key.as_str().into(),
                len: MAX_VALUE_LEN + 1,
                max: MAX_VALUE_LEN
            }))
        );
        assert_eq!(
            cmap.set(&key, "cut\0here"),
            Err(Error::Cmap(CmapError::NulInString {
                key: key.as_str().into()
            }))
        );
        assert_eq!(cmap.get::<String>(&key).as_deref(), Ok("before"));
        cmap.delete(&key).unwrap();
    });
}

#[test]
fn read_only_keys_and_the_stats_map_refuse_writes_with_access() {
    let p = prefix("ro");
    on_shared(move || {
        let cmap = Cmap::new().unwrap();
        let name: String = cmap.get("totem.cluster_name").unwrap();
        let refused = |r: Result<(), Error>, op| {
            assert_eq!(
                r,
                Err(Error::Cs {
                    op,
                    code: CsError::Access
                })
            );
        };
        refused(cmap.set("totem.cluster_name", "other"), Operation::CmapSet);
        refused(cmap.delete("totem.cluster_name"), Operation::CmapDelete);
        refused(
            cmap.inc("runtime.totem.pg.msg_reserved"),
            Operation::CmapInc,
        );
        refused(
            cmap.set("runtime.config.totem.token", 1u32),
            Operation::CmapSet,
        );
        // The node list changes only with a reload of corosync.conf.
        refused(
            cmap.set("nodelist.node.0.name", "other"),
            Operation::CmapSet,
        );
        refused(
            cmap.set(&format!("nodelist.{}", &p[..p.len() - 1]), 1u8),
            Operation::CmapSet,
        );
        let text = cmap
            .set("totem.cluster_name", "other")
            .unwrap_err()
            .to_string();
        assert!(text.contains("read-only"), "{text}");
        assert_eq!(cmap.get::<String>("totem.cluster_name"), Ok(name));
        // A key of the user's own is writable.
        cmap.set(&format!("{p}own"), 1u8).unwrap();
        cmap.delete(&format!("{p}own")).unwrap();

        let stats = Cmap::stats().unwrap();
        assert_eq!(stats.map(), Map::Stats);
        let active: u64 = stats.get("stats.ipcs.global.active").unwrap();
        assert!(active >= 2, "this process has two connections: {active}");
        refused(stats.set(&format!("{p}x"), 1u8), Operation::CmapSet);
        refused(
            stats.delete("stats.ipcs.global.active"),
            Operation::CmapDelete,
        );
        refused(stats.inc("stats.ipcs.global.active"), Operation::CmapInc);
    });
}

#[test]
fn inc_and_dec_wrap_around_and_refuse_what_is_no_integer() {
    let p = prefix("adjust");
    on_shared(move || {
        let cmap = Cmap::new().unwrap();
        let k = format!("{p}u8");
        cmap.set(&k, 254u8).unwrap();
        cmap.inc(&k).unwrap();
        assert_eq!(cmap.get::<u8>(&k), Ok(255));
        cmap.inc(&k).unwrap();
        assert_eq!(cmap.get::<u8>(&k), Ok(0), "wraps around");
        let k = format!("{p}i8");
        cmap.set(&k, -128i8).unwrap();
        cmap.dec(&k).unwrap();
        assert_eq!(cmap.get::<i8>(&k), Ok(127), "wraps around");
        let k = format!("{p}u64");
        cmap.set(&k, 41u64).unwrap();
        cmap.inc(&k).unwrap();
        assert_eq!(cmap.get::<u64>(&k), Ok(42), "keeps its type");
        for (name, value) in [("str", Value::from("x")), ("dbl", Value::Double(1.0))] {
            let k = format!("{p}{name}");
            cmap.set(&k, value).unwrap();
            let err = cmap.inc(&k).unwrap_err();
            assert_eq!(
                err,
                Error::Cs {
                    op: Operation::CmapInc,
                    code: CsError::InvalidParam
                }
            );
            assert!(err.to_string().contains("holds no integer"), "{err}");
        }
        for k in cmap
            .keys(&p)
            .unwrap()
            .map(|k| k.unwrap().key)
            .collect::<Vec<_>>()
        {
            cmap.delete(&k).unwrap();
        }
        assert_eq!(cmap.keys(&p).unwrap().count(), 0);
    });
}

/// Parses `corosync-cmapctl -b` lines: `key (type) = value`.
fn parse_cmapctl(out: &str) -> BTreeMap<String, (String, String)> {
    out.lines()
        .filter_map(|line| {
            let (key, rest) = line.split_once(" (")?;
            let (ty, value) = rest.split_once(") = ")?;
            Some((key.to_string(), (ty.to_string(), value.to_string())))
        })
        .collect()
}

#[test]
fn iteration_lists_the_keys_types_and_values_cmapctl_lists() {
    let p = prefix("iter");
    on_shared(move || {
        let cmap = Cmap::new().unwrap();
        for (name, value) in every_type() {
            cmap.set(&format!("{p}{name}"), value).unwrap();
        }
        // A backslash (doubled by the tool) and unprintable bytes (as \xNN).
        cmap.set(&format!("{p}bin"), b"a\x01b\x7f\\x41".to_vec())
            .unwrap();
        for prefix in [p.as_str(), "totem.", "nodelist.", "runtime.members."] {
            let listed: Vec<(String, Value)> = cmap
                .iter(prefix)
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            assert!(!listed.is_empty(), "nothing under {prefix}");
            assert!(listed.windows(2).all(|w| w[0].0 < w[1].0), "key order");
            let ours: BTreeMap<String, (String, String)> = listed
                .iter()
                .map(|(k, v)| (k.clone(), (v.value_type().to_string(), v.to_string())))
                .collect();
            let theirs = parse_cmapctl(&cmapctl(&["-b", prefix]));
            assert_eq!(ours, theirs, "under {prefix}");
            // The keys alone, with types and lengths.
            let keys: Vec<_> = cmap.keys(prefix).unwrap().map(Result::unwrap).collect();
            assert_eq!(
                keys.iter().map(|k| k.key.clone()).collect::<Vec<_>>(),
                listed.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>()
            );
            for (info, (_, value)) in keys.iter().zip(&listed) {
                assert_eq!(info.value_type, value.value_type(), "{}", info.key);
                if let Some(len) = value.value_type().fixed_len() {
                    assert_eq!(info.len, len, "{}", info.key);
                }
            }
        }
        // A string's length counts its NUL.
        let info = cmap
            .keys(&format!("{p}str"))
            .unwrap()
            .next()
            .unwrap()
            .unwrap();
        assert_eq!(info.len, "node1 and a space".len() + 1);
        // Nothing under an unused prefix; an iterator dropped half-way or closed is
        // finalized (the daemon answers the next one as usual).
        assert_eq!(cmap.iter("nothing.here.").unwrap().count(), 0);
        for _ in 0..50 {
            let mut it = cmap.iter("").unwrap();
            assert!(it.next().is_some());
        }
        cmap.keys(&p).unwrap().close().unwrap();
        let all = cmap.keys("").unwrap().count();
        assert!(all > 50, "every key: {all}");
        for (name, _) in every_type() {
            cmap.delete(&format!("{p}{name}")).unwrap();
        }
    });
}

#[test]
fn a_tracked_key_reports_cmapctl_and_api_changes_with_old_and_new_values() {
    let _serial = serial();
    let p = prefix("track");
    on_shared(move || {
        let cmap = Cmap::new().unwrap();
        let key = format!("{p}key");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let track = cmap
            .track_key(&key, TrackType::ALL, recorder(&seen))
            .unwrap();
        assert_eq!(cmap.tracks(), vec![track]);
        cmap.set(&key, 1u32).unwrap(); // added, by the API
        cmapctl(&["-s", &key, "u32", "2"]); // modified, by the tool
        cmap.set(&key, 2u32).unwrap(); // the same value: no change, no notification
        cmap.set(&key, "two").unwrap(); // a new type
        cmapctl(&["-d", &key]); // deleted, by the tool
        cmap.set(&format!("{key}x"), 1u8).unwrap(); // another key: not tracked
        let changes = pump_until(&cmap, &seen, 4);
        let expect = |kind, old: Option<Value>, new: Option<Value>| Change {
            track,
            kind,
            key: key.clone(),
            old,
            new,
        };
        assert_eq!(
            changes,
            vec![
                expect(ChangeKind::Added, None, Some(Value::U32(1))),
                expect(
                    ChangeKind::Modified,
                    Some(Value::U32(1)),
                    Some(Value::U32(2))
                ),
                expect(
                    ChangeKind::Modified,
                    Some(Value::U32(2)),
                    Some(Value::Str("two".into()))
                ),
                expect(ChangeKind::Deleted, Some(Value::Str("two".into())), None),
            ]
        );
        assert_quiet(&cmap, &seen, 4);

        // Only the kinds asked for.
        cmap.delete_track(track).unwrap();
        assert!(cmap.tracks().is_empty());
        let adds = Arc::new(Mutex::new(Vec::new()));
        let only_add = cmap
            .track_key(&key, TrackType::ADD, recorder(&adds))
            .unwrap();
        assert_ne!(only_add, track, "ids are not reused");
        cmap.set(&key, 1u8).unwrap();
        cmap.set(&key, 2u8).unwrap();
        cmap.delete(&key).unwrap();
        let changes = pump_until(&cmap, &adds, 1);
        assert_eq!(changes[0].kind, ChangeKind::Added);
        assert_quiet(&cmap, &adds, 1);
        assert_quiet(&cmap, &seen, 4);
        assert_eq!(
            cmap.track_key(&key, TrackType::empty(), |_, _| {}),
            Err(Error::InvalidArgument(
                "a track needs TrackType::ADD, DELETE or MODIFY"
            ))
        );
        cmap.delete(&format!("{key}x")).unwrap();
    });
}

#[test]
fn a_prefix_track_sees_every_key_under_it_and_nothing_else() {
    let _serial = serial();
    let p = prefix("prefix");
    on_shared(move || {
        let cmap = Cmap::new().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let under = format!("{p}in.");
        cmap.track_prefix(&under, TrackType::ALL, recorder(&seen))
            .unwrap();
        cmap.set(&format!("{under}a"), 1u8).unwrap();
        cmapctl(&["-s", &format!("{under}b.c"), "str", "deep"]);
        cmap.set(&format!("{p}out.a"), 1u8).unwrap();
        cmap.set(&format!("{under}a"), 3u8).unwrap();
        cmapctl(&["-D", &under]);
        let changes = pump_until(&cmap, &seen, 5);
        let summary: Vec<(ChangeKind, String, Option<Value>, Option<Value>)> = changes
            .into_iter()
            .map(|c| (c.kind, c.key, c.old, c.new))
            .collect();
        let a = format!("{under}a");
        let bc = format!("{under}b.c");
        assert_eq!(
            summary,
            vec![
                (ChangeKind::Added, a.clone(), None, Some(Value::U8(1))),
                (
                    ChangeKind::Added,
                    bc.clone(),
                    None,
                    Some(Value::Str("deep".into()))
                ),
                (
                    ChangeKind::Modified,
                    a.clone(),
                    Some(Value::U8(1)),
                    Some(Value::U8(3))
                ),
                (ChangeKind::Deleted, a, Some(Value::U8(3)), None),
                (
                    ChangeKind::Deleted,
                    bc,
                    Some(Value::Str("deep".into())),
                    None
                ),
            ]
        );
        assert_quiet(&cmap, &seen, 5);
        cmap.delete(&format!("{p}out.a")).unwrap();
    });
}

/// Counts its drops: a closure that owns one is freed when the count goes up.
struct DropCount(Arc<AtomicUsize>);

impl Drop for DropCount {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn a_callback_may_delete_its_own_track_and_another_and_each_closure_ends_once() {
    let _serial = serial();
    let p = prefix("delete");
    on_shared(move || {
        let cmap = Cmap::new().unwrap();
        let (ka, kb) = (format!("{p}a"), format!("{p}b"));
        let a_dropped = Arc::new(AtomicUsize::new(0));
        let b_dropped = Arc::new(AtomicUsize::new(0));
        let a_runs = Arc::new(AtomicUsize::new(0));
        let b_runs = Arc::new(AtomicUsize::new(0));
        let b_id = Arc::new(Mutex::new(None));
        let b = {
            let (guard, runs) = (DropCount(Arc::clone(&b_dropped)), Arc::clone(&b_runs));
            cmap.track_key(&kb, TrackType::ALL, move |_, _| {
                let _keep = &guard;
                runs.fetch_add(1, Ordering::SeqCst);
            })
            .unwrap()
        };
        *b_id.lock().unwrap() = Some(b);
        let results = Arc::new(Mutex::new(Vec::new()));
        let a = {
            let guard = DropCount(Arc::clone(&a_dropped));
            let (runs, b_id, results) =
                (Arc::clone(&a_runs), Arc::clone(&b_id), Arc::clone(&results));
            let (b_dropped, a_dropped) = (Arc::clone(&b_dropped), Arc::clone(&a_dropped));
            cmap.track_key(&ka, TrackType::ALL, move |ctx, change| {
                let _keep = &guard;
                runs.fetch_add(1, Ordering::SeqCst);
                let b = b_id.lock().unwrap().unwrap();
                // The other track: its closure is freed at once.
                results.lock().unwrap().push(ctx.delete_track(b));
                assert_eq!(
                    b_dropped.load(Ordering::SeqCst),
                    1,
                    "b freed at its deletion"
                );
                // This track: its closure runs to the end, then is freed.
                results.lock().unwrap().push(ctx.delete_track(change.track));
                assert_eq!(a_dropped.load(Ordering::SeqCst), 0, "not while it runs");
                // Deleted already.
                results.lock().unwrap().push(ctx.delete_track(change.track));
                // The context reads the map as it is now (both writes were done before
                // the dispatch), and writes it.
                assert_eq!(change.new, Some(Value::U8(1)));
                assert_eq!(ctx.get::<u8>(&change.key), Ok(2));
                ctx.set(&format!("{}.seen", change.key), 1u8).unwrap();
            })
            .unwrap()
        };
        // Both keys change twice; a's first notification deletes both tracks.
        cmap.set(&ka, 1u8).unwrap();
        cmap.set(&kb, 1u8).unwrap();
        cmap.set(&ka, 2u8).unwrap();
        cmap.set(&kb, 2u8).unwrap();
        let deadline = Instant::now() + WAIT;
        while a_runs.load(Ordering::SeqCst) == 0 {
            assert!(Instant::now() < deadline, "a never ran");
            cmap.dispatch_timeout(Duration::from_millis(100)).unwrap();
        }
        // Whatever was queued for the deleted tracks is dropped.
        let _ = cmap.dispatch_timeout(Duration::from_millis(300)).unwrap();
        assert_eq!(a_runs.load(Ordering::SeqCst), 1);
        assert_eq!(b_runs.load(Ordering::SeqCst), 0);
        assert_eq!(
            (
                a_dropped.load(Ordering::SeqCst),
                b_dropped.load(Ordering::SeqCst)
            ),
            (1, 1)
        );
        let not_found = Err(Error::Cs {
            op: Operation::CmapTrackDelete,
            code: CsError::NotExist,
        });
        assert_eq!(
            *results.lock().unwrap(),
            vec![Ok(()), Ok(()), not_found.clone()]
        );
        assert!(cmap.tracks().is_empty());
        assert_eq!(cmap.delete_track(a), not_found);

        // Tracks left at the end are freed once, with the handle, after its finalize.
        let dropped = Arc::new(AtomicUsize::new(0));
        for i in 0..3 {
            let guard = DropCount(Arc::clone(&dropped));
            cmap.track_key(&format!("{p}k{i}"), TrackType::ALL, move |_, _| {
                let _keep = &guard;
            })
            .unwrap();
        }
        assert_eq!(dropped.load(Ordering::SeqCst), 0);
        cmap.close().unwrap();
        assert_eq!(dropped.load(Ordering::SeqCst), 3);
        let cleanup = Cmap::new().unwrap();
        assert_eq!(cleanup.get::<u8>(&format!("{ka}.seen")), Ok(1));
        for k in [format!("{ka}.seen"), ka, kb] {
            cleanup.delete(&k).unwrap();
        }
    });
}

#[test]
fn a_process_registers_at_most_max_tracks_and_gets_them_back() {
    let _serial = serial();
    let p = prefix("cap");
    on_shared(move || {
        let first = Cmap::new().unwrap();
        let second = Cmap::new().unwrap();
        let mut ids = Vec::new();
        for i in 0..MAX_TRACKS {
            let cmap = if i % 2 == 0 { &first } else { &second };
            ids.push(
                cmap.track_key(&format!("{p}{i}"), TrackType::ALL, |_, _| {})
                    .unwrap_or_else(|e| panic!("track {i}: {e}")),
            );
        }
        let over = first
            .track_prefix(&p, TrackType::ALL, |_, _| {})
            .unwrap_err();
        assert_eq!(
            over,
            Error::Cmap(CmapError::TooManyTracks { max: MAX_TRACKS })
        );
        // A deleted track gives its slot back; so does a closed handle, all of its.
        first.delete_track(ids[0]).unwrap();
        first.track_prefix(&p, TrackType::ALL, |_, _| {}).unwrap();
        assert!(second.track_prefix(&p, TrackType::ALL, |_, _| {}).is_err());
        drop(second);
        let third = Cmap::new().unwrap();
        for i in 0..MAX_TRACKS / 2 {
            third
                .track_key(&format!("{p}again{i}"), TrackType::ALL, |_, _| {})
                .unwrap_or_else(|e| panic!("again {i}: {e}"));
        }
        assert!(third.track_prefix(&p, TrackType::ALL, |_, _| {}).is_err());
    });
}

#[test]
fn a_panicking_callback_resumes_in_dispatch_and_poisons_the_handle() {
    let _serial = serial();
    let p = prefix("panic");
    on_shared(move || {
        let cmap = Cmap::new().unwrap();
        let key = format!("{p}k");
        cmap.track_key(&key, TrackType::ALL, |_, change| {
            panic!("boom on {}", change.key)
        })
        .unwrap();
        cmap.set(&key, 1u8).unwrap();
        let panicked = catch_unwind(AssertUnwindSafe(|| loop {
            cmap.dispatch_timeout(Duration::from_millis(100)).unwrap();
        }))
        .unwrap_err();
        let text = panicked
            .downcast_ref::<String>()
            .cloned()
            .unwrap_or_default();
        assert_eq!(text, format!("boom on {key}"));
        assert_eq!(cmap.get::<u8>(&key), Err(Error::Poisoned));
        assert_eq!(cmap.dispatch(DispatchMode::All), Err(Error::Poisoned));
        drop(cmap);
        Cmap::new().unwrap().delete(&key).unwrap();
    });
}

#[test]
fn the_stats_map_shows_this_processs_own_connection() {
    on_shared(|| {
        let stats = Cmap::stats().unwrap();
        // Service 0 is cmap: this very connection is one.
        let mine = format!("stats.ipcs.service0.{}.", std::process::id());
        let entries: Vec<(String, Value)> = stats
            .iter(&mine)
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let procname = entries
            .iter()
            .find(|(k, _)| k.ends_with(".procname"))
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("no procname under {mine}: {entries:#?}"));
        // The daemon keeps the first 15 bytes of the process name (its comm).
        let comm = std::fs::read_to_string("/proc/self/comm").unwrap();
        assert_eq!(procname, Value::Str(comm.trim_end().to_string()));
        assert!(
            entries
                .iter()
                .any(|(k, v)| k.ends_with(".requests") && v.as_u64().is_some_and(|n| n > 0)),
            "{entries:#?}"
        );
    });
}

#[test]
fn dispatching_needs_its_stack_and_says_so() {
    let node = cpg_testkit::shared();
    let cmap = big_stack(move || node.enter(Cmap::new)).unwrap();
    let small = std::thread::Builder::new()
        .stack_size(256 << 10)
        .spawn(move || {
            let result = cmap.dispatch(DispatchMode::All);
            // Plain requests need no more than a page.
            let name = cmap.get::<String>("totem.cluster_name");
            (result, name.is_ok())
        })
        .unwrap()
        .join()
        .unwrap();
    match small {
        (
            Err(Error::StackTooSmall {
                op: Operation::CmapDispatch,
                needed,
                ..
            }),
            true,
        ) => assert_eq!(needed, DISPATCH_STACK),
        other => panic!("{other:?}"),
    }
}

#[test]
fn nothing_is_pending_without_tracks() {
    on_shared(|| {
        let cmap = Cmap::new().unwrap();
        assert_eq!(
            cmap.dispatch(DispatchMode::OneNonblocking),
            Ok(Dispatched::NothingPending)
        );
        assert_eq!(
            cmap.dispatch(DispatchMode::All),
            Ok(Dispatched::NothingPending)
        );
    });
}

#[cfg(feature = "tokio")]
mod stream {
    use super::*;
    use cpg::cmap::AsyncCmap;

    #[test]
    fn the_async_handle_streams_owned_changes_in_order() {
        let _serial = serial();
        let p = prefix("async");
        let node = cpg_testkit::shared();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let mut cmap = node.enter(AsyncCmap::new).unwrap();
            let track = cmap.track_prefix(&p, TrackType::ALL).unwrap();
            let key = format!("{p}k");
            cmap.cmap().set(&key, 1u32).unwrap();
            cmap.cmap().set(&key, 2u32).unwrap();
            cmap.cmap().delete(&key).unwrap();
            let mut got = Vec::new();
            while got.len() < 3 {
                let change = tokio::time::timeout(WAIT, cmap.next_change())
                    .await
                    .expect("a change within WAIT")
                    .expect("the stream goes on")
                    .expect("no error");
                got.push((change.track, change.kind, change.old, change.new));
            }
            assert_eq!(
                got,
                vec![
                    (track, ChangeKind::Added, None, Some(Value::U32(1))),
                    (
                        track,
                        ChangeKind::Modified,
                        Some(Value::U32(1)),
                        Some(Value::U32(2))
                    ),
                    (track, ChangeKind::Deleted, Some(Value::U32(2)), None),
                ]
            );
            cmap.delete_track(track).unwrap();
            cmap.close().unwrap();
        });
    }
}
