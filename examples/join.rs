//! The smallest useful CPG program: join a group, say hello, print what arrives.
//!
//! ```text
//! cargo run -p cpg-examples --bin join -- my-group
//! ```
//!
//! Runs until interrupted; every member of `my-group` on every node sees the hello.

use cpg::{DispatchMode, GroupName, Handle};

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // Errors as text ("cpg_model_initialize failed: CS_ERR_LIBRARY: no
            // connection to the corosync daemon ..."), not as a Debug dump.
            eprintln!("join: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), cpg::Error> {
    let name = std::env::args().nth(1).unwrap_or_else(|| "example".into());
    if name == "-h" || name == "--help" {
        // Otherwise "--help" would be taken as the group name and joined.
        println!("Usage: join [GROUP]\n");
        println!("Join GROUP (default: example), send a hello, print what arrives, until Ctrl-C.");
        return Ok(());
    }
    let group = GroupName::new(&name)?;

    let handle = Handle::builder()
        .on_deliver(|_cpg, msg| {
            println!(
                "[{}] node {} pid {}: {}",
                msg.group,
                msg.nodeid,
                msg.pid,
                msg.data.escape_ascii()
            );
        })
        .on_confchg(|_cpg, change| {
            let members: Vec<String> = change
                .members
                .iter()
                .map(|m| m.member().to_string())
                .collect();
            println!("[{}] members: {}", change.group, members.join(", "));
        })
        .build()?;

    handle.join(&group)?;
    handle.send(format!("hello from pid {}", std::process::id()).as_bytes())?;
    loop {
        handle.dispatch(DispatchMode::One)?;
    }
}
