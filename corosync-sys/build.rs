//! Build script for `corosync-sys`. It reads top to bottom:
//!
//! 1. **probe**: find libcpg and libcorosync_common (pkg-config, or the
//!    `COROSYNC_INCLUDE_DIR` / `COROSYNC_LIB_DIR` overrides);
//! 2. **decide**: docs.rs (no corosync there) uses the bundled snapshot;
//! 3. **generate**: run bindgen over `<corosync/cpg.h>` and `<corosync/corotypes.h>`
//!    with narrow allowlists;
//! 4. **emit**: link flags, cfgs for header differences, metadata for dependents.

use std::env;
use std::fmt::Write as _;
use std::path::PathBuf;

/// Oldest corosync whose headers have every call this crate binds (cpg_model_initialize,
/// cpg_zcb_*, cpg_iteration_*, cpg_max_atomic_msgsize_get all exist in 2.4).
const MIN_VERSION: &str = "2.4";

/// Environment variables this script reads; each gets a `rerun-if-env-changed`.
const ENV_INCLUDE_DIR: &str = "COROSYNC_INCLUDE_DIR";
const ENV_LIB_DIR: &str = "COROSYNC_LIB_DIR";
const ENV_DOCS_RS: &str = "DOCS_RS";

/// Custom cfgs this script may emit (declared with `rustc-check-cfg`).
const CFG_REASON_UNDEFINED: &str = "corosync_has_reason_undefined";

/// Where the libraries and headers were found.
struct Probe {
    include_dirs: Vec<PathBuf>,
    /// Version reported by pkg-config, when it was used.
    version: Option<String>,
}

fn main() {
    for var in [ENV_INCLUDE_DIR, ENV_LIB_DIR, ENV_DOCS_RS] {
        println!("cargo::rerun-if-env-changed={var}");
    }
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-changed=src/bindings_snapshot.rs");
    println!("cargo::rustc-check-cfg=cfg({CFG_REASON_UNDEFINED})");

    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let bindings_path = out.join("bindings.rs");

    // docs.rs has no corosync: document the snapshot generated from corosync 3.1.7.
    if env::var_os(ENV_DOCS_RS).is_some() {
        let snapshot = include_str!("src/bindings_snapshot.rs");
        std::fs::write(&bindings_path, snapshot).expect("write bindings.rs");
        emit_header_cfgs(snapshot, Some("3.1.7"));
        return;
    }

    let probe = probe().unwrap_or_else(|why| fail(&why));
    let bindings = generate(&probe).unwrap_or_else(|why| fail(&why));
    std::fs::write(&bindings_path, &bindings).expect("write bindings.rs");
    emit_header_cfgs(&bindings, probe.version.as_deref());

    let include = probe
        .include_dirs
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(":");
    // Metadata for dependents' build scripts: DEP_CPG_INCLUDE / DEP_CPG_VERSION.
    println!("cargo::metadata=include={include}");
    if let Some(v) = &probe.version {
        println!("cargo::metadata=version={v}");
    }
}

/// Finds headers and libraries, and prints the link instructions.
fn probe() -> Result<Probe, String> {
    let include_override = env::var_os(ENV_INCLUDE_DIR).map(PathBuf::from);
    let lib_override = env::var_os(ENV_LIB_DIR).map(PathBuf::from);

    let probe = if include_override.is_some() || lib_override.is_some() {
        if let Some(lib) = &lib_override {
            println!("cargo::rustc-link-search=native={}", lib.display());
        }
        println!("cargo::rustc-link-lib=cpg");
        println!("cargo::rustc-link-lib=corosync_common");
        Probe {
            include_dirs: include_override.into_iter().collect(),
            version: None,
        }
    } else {
        let mut version = None;
        let mut include_dirs = Vec::new();
        for lib in ["libcpg", "libcorosync_common"] {
            let found = pkg_config::Config::new()
                .atleast_version(MIN_VERSION)
                .probe(lib)
                .map_err(|e| format!("pkg-config could not find {lib} >= {MIN_VERSION}:\n{e}"))?;
            version.get_or_insert(found.version);
            include_dirs.extend(found.include_paths);
        }
        include_dirs.dedup();
        Probe {
            include_dirs,
            version,
        }
    };

    // pkg-config on most distros reports no include path for /usr/include: check the
    // compiler's default too, so a missing header is reported here rather than by clang.
    let mut search = probe.include_dirs.clone();
    search.push(PathBuf::from("/usr/include"));
    search.push(PathBuf::from("/usr/local/include"));
    for header in ["corosync/cpg.h", "corosync/corotypes.h"] {
        if !search.iter().any(|dir| dir.join(header).is_file()) {
            return Err(format!(
                "the header <{header}> was not found (searched: {})",
                search
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
    }
    Ok(probe)
}

/// Runs bindgen over the two public headers.
fn generate(probe: &Probe) -> Result<String, String> {
    let mut builder = bindgen::Builder::default()
        .header_contents(
            "corosync_sys_wrapper.h",
            "#include <corosync/corotypes.h>\n#include <corosync/cpg.h>\n",
        )
        .clang_args(
            probe
                .include_dirs
                .iter()
                .map(|p| format!("-I{}", p.display())),
        )
        // Only libcpg and the corosync common types: `<netinet/in.h>` is included by
        // cpg.h and must not leak the socket API into this crate.
        .allowlist_function("cpg_.*")
        .allowlist_function("cs_strerror")
        .allowlist_type("cpg_.*")
        .allowlist_type("cs_.*")
        .allowlist_var("CPG_.*")
        .allowlist_var("CS_.*")
        // `struct iovec` comes from libc, so callers can build it with the libc crate.
        .blocklist_type("iovec")
        .raw_line("pub use libc::iovec;")
        // libcpg can return values a binding does not know: plain integer constants.
        .default_enum_style(bindgen::EnumVariation::Consts)
        .prepend_enum_name(false)
        // The header comments are doxygen markup that renders badly as rustdoc.
        .generate_comments(false)
        .layout_tests(true)
        .derive_default(true)
        .derive_debug(true)
        .use_core()
        .parse_callbacks(Box::new(bindgen::CargoCallbacks::new()));
    if let Ok(target) = env::var("TARGET") {
        builder = builder.clang_arg(format!("--target={target}"));
    }
    builder
        .generate()
        .map(|b| b.to_string())
        .map_err(|e| format!("bindgen failed on the corosync headers: {e}"))
}

/// Emits the cfg for the one header difference the crate uses (`CPG_REASON_UNDEFINED`
/// is missing from some 2.x headers) and the library version.
fn emit_header_cfgs(bindings: &str, version: Option<&str>) {
    if bindings.contains("CPG_REASON_UNDEFINED") {
        println!("cargo::rustc-cfg={CFG_REASON_UNDEFINED}");
    }
    println!(
        "cargo::rustc-env=COROSYNC_SYS_LIBCPG_VERSION={}",
        version.unwrap_or("unknown")
    );
}

/// Prints one message that says what to install and how to override the search, then
/// stops the build.
fn fail(why: &str) -> ! {
    let mut msg = String::new();
    let _ = write!(
        msg,
        "\n\ncorosync-sys: cannot build the bindings to libcpg.\n\n  {}\n\n",
        why.replace('\n', "\n  ")
    );
    msg.push_str(
        "corosync-sys needs the corosync client libraries (libcpg, libcorosync_common), their\n\
         headers, libqb's pkg-config file, pkg-config itself, and libclang for bindgen.\n\
         Install them with:\n\n\
         \x20   Debian / Ubuntu:            apt-get install libcpg-dev libcorosync-common-dev libqb-dev pkg-config libclang-dev\n\
         \x20   RHEL / CentOS / Rocky / Alma / Fedora:\n\
         \x20                               dnf install corosynclib-devel libqb-devel pkgconf-pkg-config clang-devel\n\
         \x20                               (on RHEL 8/9 corosynclib-devel is in the HighAvailability or CRB repository)\n\n\
         Or point the build at an installation pkg-config does not know about:\n\n",
    );
    let _ = writeln!(
        msg,
        "    {ENV_INCLUDE_DIR}=/path/to/include   (the directory that holds corosync/cpg.h)"
    );
    let _ = writeln!(
        msg,
        "    {ENV_LIB_DIR}=/path/to/lib           (the directory that holds libcpg.so)"
    );
    let _ = writeln!(
        msg,
        "    PKG_CONFIG_PATH=/path/to/pkgconfig   (extra directories for libcpg.pc)\n"
    );
    eprintln!("{msg}");
    std::process::exit(1);
}
