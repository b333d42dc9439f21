//! Read, write, list and track corosync's configuration and runtime keys (what
//! `corosync-cmapctl` does), as text or as JSON.
//!
//! ```text
//! cargo run -p cpg-examples --bin cmap -- get totem.cluster_name
//! cargo run -p cpg-examples --bin cmap -- list nodelist.          # every key under a prefix
//! cargo run -p cpg-examples --bin cmap -- --stats list stats.ipcs.
//! cargo run -p cpg-examples --bin cmap -- set my.key u32 5
//! cargo run -p cpg-examples --bin cmap -- set my.blob bin ./file  # bytes of a file (- for stdin)
//! cargo run -p cpg-examples --bin cmap -- -b get my.blob          # show binary values too
//! cargo run -p cpg-examples --bin cmap -- delete my.key
//! cargo run -p cpg-examples --bin cmap -- track --prefix totem.  # changes until Ctrl-C
//! cargo run -p cpg-examples --bin cmap -- --json list totem.
//! ```
//!
//! Text lines are `corosync-cmapctl`'s: `key (type) = value` (floats with six decimals,
//! as C's `%f`); a binary value shows as `key (bin)` alone unless `-b` is given, then
//! with printable bytes as they are, `\\` for a backslash and `\xNN` for the others.
//! `set KEY bin FILE` stores the bytes of FILE (`-`: standard input), as the tool does.
//! `track` prints `create> `, `modify> ` or `delete> ` and the key with its new value
//! (for a deletion, the value it had). With `--json`, every key or change is one JSON
//! object per line: `{"key", "type", "value"}` (binary values in hex), changes with
//! `"event"`, `"old"` and `"new"` (`null` when absent).

use std::io::Read;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use cpg::cmap::{Change, ChangeKind, Cmap, Map, TrackType, Value, ValueType};
use serde_json::json;

/// corosync's cmap from the command line.
#[derive(Debug, Parser)]
#[command(version, long_about = None)]
struct Args {
    /// Use the statistics map instead of the main one.
    #[arg(long)]
    stats: bool,
    /// Print one JSON object per line instead of text.
    #[arg(long)]
    json: bool,
    /// Show the bytes of binary values (`corosync-cmapctl -b`).
    #[arg(short = 'b', long)]
    binary: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the values of these keys.
    Get {
        /// Key names.
        #[arg(required = true)]
        keys: Vec<String>,
    },
    /// Print every key under a prefix (all keys without one).
    List {
        /// The prefix.
        #[arg(default_value = "")]
        prefix: String,
    },
    /// Set a key: TYPE is one of i8 u8 i16 u16 i32 u32 i64 u64 flt dbl str bin.
    Set {
        /// Key name.
        key: String,
        /// Value type.
        value_type: String,
        /// The value (for bin, a file whose bytes to store, or - for standard input).
        value: String,
    },
    /// Delete keys.
    Delete {
        /// Key names.
        #[arg(required = true)]
        keys: Vec<String>,
    },
    /// Print every change of a key (or, with --prefix, of the keys under a prefix)
    /// until interrupted.
    Track {
        /// Track every key that starts with KEY.
        #[arg(long)]
        prefix: bool,
        /// The key or prefix.
        key: String,
    },
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cmap: {e}");
            ExitCode::from(1)
        }
    }
}

fn run(args: &Args) -> Result<(), String> {
    let map = if args.stats { Map::Stats } else { Map::Main };
    let cmap = Cmap::connect(map, Some(0)).map_err(|e| format!("cannot connect to cmap: {e}"))?;
    match &args.command {
        Command::Get { keys } => {
            for key in keys {
                let value = cmap.get_value(key).map_err(|e| format!("{key}: {e}"))?;
                print_entry(args, key, &value);
            }
        }
        Command::List { prefix } => {
            for entry in cmap.iter(prefix).map_err(|e| e.to_string())? {
                let (key, value) = entry.map_err(|e| e.to_string())?;
                print_entry(args, &key, &value);
            }
        }
        Command::Set {
            key,
            value_type,
            value,
        } => {
            let ty = ValueType::from_name(value_type)
                .ok_or_else(|| format!("unknown type {value_type:?}"))?;
            let value = if ty == ValueType::Binary {
                Value::Binary(read_bytes(value)?)
            } else {
                Value::parse(ty, value).ok_or_else(|| format!("{value:?} is no {ty} value"))?
            };
            cmap.set(key, value).map_err(|e| format!("{key}: {e}"))?;
        }
        Command::Delete { keys } => {
            for key in keys {
                cmap.delete(key).map_err(|e| format!("{key}: {e}"))?;
            }
        }
        Command::Track { prefix, key } => track(&cmap, args, *prefix, key)?,
    }
    cmap.close().map_err(|e| e.to_string())
}

/// Prints every change until SIGINT or SIGTERM.
fn track(cmap: &Cmap, args: &Args, prefix: bool, key: &str) -> Result<(), String> {
    let (json, binary) = (args.json, args.binary);
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&stop)).map_err(|e| e.to_string())?;
    }
    let print =
        move |_: &cpg::cmap::TrackContext<'_>, change: Change| print_change(json, binary, &change);
    if prefix {
        cmap.track_prefix(key, TrackType::ALL, print)
    } else {
        cmap.track_key(key, TrackType::ALL, print)
    }
    .map_err(|e| format!("cannot track {key}: {e}"))?;
    // Tools read this line to know the track is in place.
    if json {
        println!(
            "{}",
            json!({"event": "tracking", "key": key, "prefix": prefix})
        );
    } else {
        println!("tracking {key}{}", if prefix { " (prefix)" } else { "" });
    }
    while !stop.load(Ordering::SeqCst) {
        cmap.dispatch_timeout(Duration::from_millis(200))
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// The bytes of a file, or of standard input for `-` (`corosync-cmapctl -s KEY bin FILE`).
fn read_bytes(file: &str) -> Result<Vec<u8>, String> {
    if file != "-" {
        return std::fs::read(file).map_err(|e| format!("cannot read {file}: {e}"));
    }
    let mut bytes = Vec::new();
    std::io::stdin()
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read standard input: {e}"))?;
    Ok(bytes)
}

fn print_entry(args: &Args, key: &str, value: &Value) {
    if args.json {
        let mut doc = json_value(value);
        doc["key"] = json!(key);
        println!("{doc}");
    } else {
        println!("{}", text_entry(args.binary, key, value));
    }
}

/// `key (type) = value` as `corosync-cmapctl` prints it: a binary value's bytes only
/// with `-b`.
fn text_entry(binary: bool, key: &str, value: &Value) -> String {
    let ty = value.value_type();
    if ty == ValueType::Binary && !binary {
        format!("{key} ({ty})")
    } else {
        format!("{key} ({ty}) = {value}")
    }
}

fn print_change(json: bool, binary: bool, change: &Change) {
    if json {
        let side = |v: &Option<Value>| v.as_ref().map_or(serde_json::Value::Null, json_value);
        println!(
            "{}",
            json!({
                "event": change.kind.to_string(),
                "key": change.key,
                "old": side(&change.old),
                "new": side(&change.new),
            })
        );
        return;
    }
    // As corosync-cmapctl: the new value, or for a deletion the old one.
    let (tag, value) = match change.kind {
        ChangeKind::Added => ("create", &change.new),
        ChangeKind::Modified => ("modify", &change.new),
        ChangeKind::Deleted => ("delete", &change.old),
        _ => ("unknown change", &None),
    };
    match value {
        Some(v) => println!("{tag}> {}", text_entry(binary, &change.key, v)),
        None => println!("{tag}> {}", change.key),
    }
}

/// `{"type": "u32", "value": 5}`; binary values as a hex string.
fn json_value(value: &Value) -> serde_json::Value {
    let v = match value {
        Value::Float(f) => json!(f),
        Value::Double(d) => json!(d),
        Value::Str(s) => json!(s),
        Value::Binary(b) => json!(b.iter().map(|x| format!("{x:02x}")).collect::<String>()),
        other => match (other.as_i64(), other.as_u64()) {
            (Some(i), _) => json!(i),
            (None, Some(u)) => json!(u),
            _ => json!(other.to_string()),
        },
    };
    json!({"type": value.value_type().to_string(), "value": v})
}
