//! What the layers log through `tracing` (feature `tracing`), on real daemons, as an
//! operator reads it: a subscriber of this test process captures every event with its
//! fields and the fields of the spans around it, and each test looks at the events in
//! the span of its own group (its name is unique).
//!
//! - a daemon killed and started again: the group says which view it installed and
//!   that the agreed quorum is reached, warns that the daemon was lost (with the
//!   error) and says it reconnected (with the new incarnation), in a span naming the
//!   group, the node and the pid;
//! - a state transfer: the joiner says its state was replaced by the source's and that
//!   the round ended with a transfer (its size in bytes and its duration), the source
//!   that its state was sent;
//! - a raw handle flooding the group with garbage: a bounded number of warnings, then
//!   a summary whose count of suppressed ones makes up the rest.

mod support;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use cpg::group::{Config, Event};
use cpg::GroupName;
use cpg_testkit::Cluster;
use support::group::Participant;
use support::peer::Peer;
use support::replica::Rep;
use support::{shared_cluster, unique_group, WAIT};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record as Values};
use tracing::{Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;

/// One captured event.
#[derive(Debug, Clone)]
struct Record {
    level: Level,
    target: String,
    message: String,
    fields: BTreeMap<String, String>,
    /// The spans around it, outermost first: name and fields.
    spans: Vec<(String, BTreeMap<String, String>)>,
}

impl Record {
    fn field(&self, name: &str) -> Option<&str> {
        self.fields.get(name).map(String::as_str)
    }

    /// The fields of the span named `name` around the event.
    fn span(&self, name: &str) -> Option<&BTreeMap<String, String>> {
        self.spans.iter().find(|(n, _)| n == name).map(|(_, f)| f)
    }
}

/// Field values as text (strings without quotes).
struct Fields<'a>(&'a mut BTreeMap<String, String>);

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_string(), value.to_string());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0
            .insert(field.name().to_string(), format!("{value:?}"));
    }
}

/// The fields of a span, kept in its extensions.
struct SpanFields(BTreeMap<String, String>);

/// A layer that keeps every event.
struct Capture(Arc<Mutex<Vec<Record>>>);

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Capture {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut fields = BTreeMap::new();
        attrs.record(&mut Fields(&mut fields));
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(SpanFields(fields));
        }
    }

    fn on_record(&self, id: &Id, values: &Values<'_>, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id) {
            if let Some(f) = span.extensions_mut().get_mut::<SpanFields>() {
                values.record(&mut Fields(&mut f.0));
            }
        }
    }

    fn on_event(&self, event: &tracing::Event<'_>, ctx: Context<'_, S>) {
        let mut fields = BTreeMap::new();
        event.record(&mut Fields(&mut fields));
        let message = fields.remove("message").unwrap_or_default();
        let spans = ctx
            .event_scope(event)
            .map(|scope| {
                scope
                    .from_root()
                    .map(|s| {
                        let f = s.extensions().get::<SpanFields>().map(|f| f.0.clone());
                        (s.name().to_string(), f.unwrap_or_default())
                    })
                    .collect()
            })
            .unwrap_or_default();
        self.0.lock().unwrap().push(Record {
            level: *event.metadata().level(),
            target: event.metadata().target().to_string(),
            message,
            fields,
            spans,
        });
    }
}

/// Every event captured so far in this process (the subscriber is installed on the
/// first call).
fn captured() -> Vec<Record> {
    static RECORDS: OnceLock<Arc<Mutex<Vec<Record>>>> = OnceLock::new();
    let records = RECORDS.get_or_init(|| {
        let records = Arc::new(Mutex::new(Vec::new()));
        let subscriber = tracing_subscriber::registry().with(Capture(Arc::clone(&records)));
        tracing::subscriber::set_global_default(subscriber).expect("the only subscriber");
        records
    });
    records.lock().unwrap().clone()
}

/// The events logged in the span `span` (`cpg_group`, `cpg_replica`) of `group`.
fn of(span: &str, group: &GroupName) -> Vec<Record> {
    let name = group.to_string();
    captured()
        .into_iter()
        .filter(|r| r.span(span).and_then(|f| f.get("group")) == Some(&name))
        .collect()
}

/// Waits (bounded) until an event in `span` of `group` passes `check`; returns it.
fn wait_record(
    what: &str,
    span: &str,
    group: &GroupName,
    limit: Duration,
    check: impl Fn(&Record) -> bool,
) -> Record {
    let deadline = Instant::now() + limit;
    loop {
        let records = of(span, group);
        if let Some(r) = records.iter().find(|r| check(r)) {
            return r.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no {what} within {limit:?}; the group's events: {records:#?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_daemon_restart_is_logged_as_lost_then_reconnected_in_the_groups_span() {
    captured();
    let cluster = Cluster::builder()
        .nodes(1)
        .quorum(cpg_testkit::Quorum::votequorum())
        .start()
        .expect("a node with votequorum");
    let group = unique_group("trace-reconnect");
    let member = Participant::start(cluster.node(0), "member", &group, Config::default());

    let view = wait_record("first view", "cpg_group", &group, WAIT, |r| {
        r.message.starts_with("installed view ")
    });
    assert_eq!(view.level, Level::INFO);
    assert_eq!(view.target, "cpg::group");
    assert_eq!(view.field("members"), Some("1"));
    assert_eq!(view.field("leader"), Some("true"));
    let span = view.span("cpg_group").unwrap();
    assert_eq!(span.get("pid"), Some(&std::process::id().to_string()));
    assert_eq!(span.get("node"), Some(&"1".to_string()), "node id recorded");
    // The agreed quorum, once the first marker is delivered.
    let quorum = wait_record("agreed quorum", "cpg_group", &group, WAIT, |r| {
        r.message.starts_with("agreed quorum: quorate")
    });
    assert_eq!(quorum.level, Level::INFO);
    assert_eq!(quorum.field("quorate"), Some("true"));
    assert_eq!(quorum.field("view"), view.field("view"));

    cluster.kill_daemon(0);
    member.log().wait_for("Disconnected", WAIT, |e| {
        e.iter()
            .any(|e| matches!(e, Event::Disconnected { .. }))
            .then_some(())
    });
    let lost = wait_record("daemon lost", "cpg_group", &group, WAIT, |r| {
        r.message.contains("daemon lost")
    });
    assert_eq!(lost.level, Level::WARN);
    let error = lost.field("error").expect("the error is a field");
    assert!(error.contains("CS_ERR_LIBRARY"), "error field: {error}");

    cluster.restart_daemon(0);
    member.log().wait_for("Reconnected", WAIT * 2, |e| {
        e.iter()
            .any(|e| matches!(e, Event::Reconnected { .. }))
            .then_some(())
    });
    let back = wait_record("reconnected", "cpg_group", &group, WAIT, |r| {
        r.message.starts_with("reconnected")
    });
    assert_eq!(back.level, Level::INFO);
    assert_eq!(back.field("incarnation"), Some("2"));
    assert_eq!(back.field("members"), Some("1"));

    // In order: the first view, the loss, the reconnect; nothing per message.
    let records = of("cpg_group", &group);
    let at = |m: &str| records.iter().position(|r| r.message.starts_with(m));
    assert!(at("installed view ") < at("daemon lost") && at("daemon lost") < at("reconnected"));
}

#[test]
fn a_state_transfer_is_logged_with_its_size_and_duration_on_both_sides() {
    captured();
    let cluster = shared_cluster();
    let group = unique_group("trace-transfer");
    let source = Rep::start(cluster.node(0), "source", &group);
    source.wait_ready(1);
    // A state of some size: 64 KiB of padding and a few operations.
    for op in [&b"pad 65536"[..], b"one", b"two"] {
        source
            .replica
            .submit(op.to_vec())
            .unwrap()
            .wait(WAIT)
            .unwrap();
    }
    let joiner = Rep::start(cluster.node(1), "joiner", &group);
    joiner.wait_ready(2);
    source.wait_ready(2);
    let source_member = source.member().to_string();

    let replaced = wait_record("state replaced", "cpg_replica", &group, WAIT, |r| {
        r.message.starts_with("state replaced")
            && r.span("cpg_replica").unwrap().get("node") == Some(&"2".to_string())
    });
    assert_eq!(replaced.level, Level::INFO);
    assert_eq!(replaced.target, "cpg::replica");
    assert_eq!(replaced.field("source"), Some(source_member.as_str()));
    assert_eq!(replaced.field("discarded"), Some("0"));

    let synced = wait_record("joiner in sync", "cpg_replica", &group, WAIT, |r| {
        r.message == "in sync: state transferred"
            && r.span("cpg_replica").unwrap().get("node") == Some(&"2".to_string())
    });
    assert_eq!(synced.field("transferred"), Some("true"));
    assert_eq!(synced.field("source"), Some(source_member.as_str()));
    let bytes: u64 = synced.field("bytes").unwrap().parse().unwrap();
    assert!(bytes >= 65536, "the transfer's size: {bytes} bytes");
    let elapsed: u64 = synced.field("elapsed_ms").unwrap().parse().unwrap();
    assert!(elapsed < (WAIT * 2).as_millis() as u64, "{elapsed} ms");

    let sent = wait_record("source in sync", "cpg_replica", &group, WAIT, |r| {
        r.message.contains("this member's state was sent")
            && r.span("cpg_replica").unwrap().get("node") == Some(&"1".to_string())
    });
    assert_eq!(sent.level, Level::INFO);
    assert_eq!(sent.field("version"), synced.field("version"));
}

#[test]
fn a_flood_of_malformed_messages_is_logged_at_a_bounded_rate_with_a_summary() {
    const FLOOD: u64 = 300;
    captured();
    let cluster = shared_cluster();
    let group = unique_group("trace-flood");
    let member = Participant::start(cluster.node(0), "member", &group, Config::default());
    let raw = Peer::threaded(cluster.node(1), "raw", &group);
    member.log().wait_view(&[member.member(), raw.member()]);
    for i in 0..FLOOD {
        raw.send(format!("garbage {i}").into_bytes()).unwrap();
    }
    let deadline = Instant::now() + WAIT;
    while member.group().stats().malformed < FLOOD {
        assert!(Instant::now() < deadline, "{:?}", member.group().stats());
        std::thread::sleep(Duration::from_millis(20));
    }
    // The summary of the suppressed ones comes once the interval (5 s) is over.
    let summary = |r: &Record| r.field("suppressed").is_some();
    wait_record("summary", "cpg_group", &group, WAIT, summary);
    let records = of("cpg_group", &group);
    let warnings: Vec<&Record> = records
        .iter()
        .filter(|r| r.message.starts_with("malformed message:"))
        .collect();
    let summaries: Vec<u64> = records
        .iter()
        .filter(|r| summary(r))
        .map(|r| r.field("suppressed").unwrap().parse().unwrap())
        .collect();
    assert!(
        warnings
            .iter()
            .all(|r| r.level == Level::WARN && r.field("from") == Some(&raw.member().to_string())),
        "{warnings:#?}"
    );
    assert!(
        !warnings.is_empty() && warnings.len() <= 10 * (summaries.len() + 1),
        "{} warnings for {} summaries",
        warnings.len(),
        summaries.len()
    );
    assert_eq!(
        warnings.len() as u64 + summaries.iter().sum::<u64>(),
        FLOOD,
        "every malformed message logged or counted in a summary"
    );
}
