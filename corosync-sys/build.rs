//! Build script for `corosync-sys`. It reads top to bottom:
//!
//! 1. **probe**: find libcpg and libcorosync_common, and the library of every service
//!    a cargo feature asks for (quorum, votequorum, cmap, cfg), with pkg-config or the
//!    `COROSYNC_INCLUDE_DIR` / `COROSYNC_LIB_DIR` overrides;
//! 2. **decide**: docs.rs (no corosync there) uses the bundled snapshots;
//! 3. **generate**: run bindgen over each service's header with narrow allowlists,
//!    one file per service in `OUT_DIR`;
//! 4. **emit**: link flags (only the libraries asked for), cfgs for header
//!    differences, metadata for dependents.

use std::env;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Oldest corosync whose headers have every call this crate binds (cpg_model_initialize,
/// cpg_zcb_*, cpg_iteration_*, cpg_max_atomic_msgsize_get all exist in 2.4).
const MIN_VERSION: &str = "2.4";

/// Environment variables this script reads; each gets a `rerun-if-env-changed`.
const ENV_INCLUDE_DIR: &str = "COROSYNC_INCLUDE_DIR";
const ENV_LIB_DIR: &str = "COROSYNC_LIB_DIR";
const ENV_DOCS_RS: &str = "DOCS_RS";

/// One corosync client library and the part of the bindings generated from its header.
struct Service {
    /// The cargo feature that asks for it (`None`: always built).
    feature: Option<&'static str>,
    /// The pkg-config names it needs.
    pkg_config: &'static [&'static str],
    /// The libraries to link when the overrides are used.
    link: &'static [&'static str],
    /// Its public header.
    header: &'static str,
    /// The names bindgen generates (functions, types, constants), as regexes.
    functions: &'static [&'static str],
    types: &'static [&'static str],
    vars: &'static [&'static str],
    /// The file in `OUT_DIR` (and under `src/snapshot/`).
    file: &'static str,
    /// Debian's development package(s).
    debian: &'static str,
}

/// CPG and the corosync common types: always built. The other services come after it
/// and take `cs_error_t` and friends from it.
const CPG: Service = Service {
    feature: None,
    pkg_config: &["libcpg", "libcorosync_common"],
    link: &["cpg", "corosync_common"],
    header: "corosync/cpg.h",
    functions: &["cpg_.*", "cs_strerror"],
    types: &["cpg_.*", "cs_.*"],
    vars: &["CPG_.*", "CS_.*"],
    file: "cpg.rs",
    debian: "libcpg-dev libcorosync-common-dev",
};

/// The services behind cargo features, in the order their parts are included.
const SERVICES: [Service; 4] = [
    Service {
        feature: Some("quorum"),
        pkg_config: &["libquorum"],
        link: &["quorum"],
        header: "corosync/quorum.h",
        functions: &["quorum_.*"],
        types: &["quorum_.*"],
        vars: &["QUORUM_.*"],
        file: "quorum.rs",
        debian: "libquorum-dev",
    },
    Service {
        feature: Some("votequorum"),
        pkg_config: &["libvotequorum"],
        link: &["votequorum"],
        header: "corosync/votequorum.h",
        functions: &["votequorum_.*"],
        types: &["votequorum_.*"],
        vars: &["VOTEQUORUM_.*"],
        file: "votequorum.rs",
        debian: "libvotequorum-dev",
    },
    Service {
        feature: Some("cmap"),
        pkg_config: &["libcmap"],
        link: &["cmap"],
        header: "corosync/cmap.h",
        functions: &["cmap_.*"],
        types: &["cmap_.*"],
        vars: &["CMAP_.*"],
        file: "cmap.rs",
        debian: "libcmap-dev",
    },
    Service {
        feature: Some("cfg"),
        pkg_config: &["libcfg"],
        link: &["cfg"],
        header: "corosync/cfg.h",
        functions: &["corosync_cfg_.*"],
        types: &["corosync_cfg_.*", "corosync_knet_.*"],
        vars: &["COROSYNC_CFG_.*", "CFG_.*"],
        file: "cfg.rs",
        debian: "libcfg-dev",
    },
];

/// Custom cfgs this script may emit (declared with `rustc-check-cfg`), each with the
/// text of the generated bindings that shows the header has the item.
const HEADER_CFGS: [(&str, &str); 4] = [
    // Missing from some 2.x headers.
    ("corosync_has_reason_undefined", "CPG_REASON_UNDEFINED"),
    // corosync 3.1: the quorum notification with a ring id and a node list callback.
    ("corosync_has_quorum_model_v1", "quorum_model_v1_data_t"),
    // corosync 3.x: votequorum's node list notification (ring id + members).
    (
        "corosync_has_votequorum_nodelist",
        "votequorum_nodelist_notify_fn",
    ),
    // corosync 3.1: per-node knet link status (what `corosync-cfgtool -s` prints).
    (
        "corosync_has_cfg_node_status",
        "corosync_cfg_node_status_get",
    ),
];

impl Service {
    /// Whether this build wants the service.
    fn enabled(&self) -> bool {
        self.feature
            .is_none_or(|f| env::var_os(format!("CARGO_FEATURE_{}", f.to_uppercase())).is_some())
    }
}

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
    println!("cargo::rerun-if-changed=src/snapshot");
    for (cfg, _) in HEADER_CFGS {
        println!("cargo::rustc-check-cfg=cfg({cfg})");
    }

    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let services: Vec<&Service> = std::iter::once(&CPG)
        .chain(SERVICES.iter())
        .filter(|s| s.enabled())
        .collect();

    // docs.rs has no corosync: document the snapshots generated from corosync 3.1.7.
    if env::var_os(ENV_DOCS_RS).is_some() {
        let mut all = String::new();
        for service in &services {
            let snapshot = snapshot(service.file);
            write_part(&out, service, &snapshot);
            all.push_str(&snapshot);
        }
        emit_header_cfgs(&all, Some("3.1.7"));
        return;
    }

    let probe = probe(&services).unwrap_or_else(|why| fail(&why, &services));
    let mut all = String::new();
    for service in &services {
        let part = generate(&probe, service).unwrap_or_else(|why| fail(&why, &services));
        write_part(&out, service, &part);
        all.push_str(&part);
    }
    emit_header_cfgs(&all, probe.version.as_deref());

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

/// The bundled snapshot of one part (`src/snapshot/FILE`).
fn snapshot(file: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("src/snapshot")
        .join(file);
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read the snapshot {}: {e}", path.display()))
}

fn write_part(out: &Path, service: &Service, text: &str) {
    std::fs::write(out.join(service.file), text).expect("write the bindings to OUT_DIR");
}

/// Finds headers and libraries of the wanted services, and prints the link
/// instructions.
fn probe(services: &[&Service]) -> Result<Probe, String> {
    let include_override = env::var_os(ENV_INCLUDE_DIR).map(PathBuf::from);
    let lib_override = env::var_os(ENV_LIB_DIR).map(PathBuf::from);

    let probe = if include_override.is_some() || lib_override.is_some() {
        if let Some(lib) = &lib_override {
            println!("cargo::rustc-link-search=native={}", lib.display());
        }
        for lib in services.iter().flat_map(|s| s.link) {
            println!("cargo::rustc-link-lib={lib}");
        }
        Probe {
            include_dirs: include_override.into_iter().collect(),
            version: None,
        }
    } else {
        let mut version = None;
        let mut include_dirs = Vec::new();
        for lib in services.iter().flat_map(|s| s.pkg_config) {
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
    let headers = std::iter::once("corosync/corotypes.h").chain(services.iter().map(|s| s.header));
    for header in headers {
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

/// Runs bindgen over one service's header. Every part but CPG's takes the corosync
/// common types (`cs_error_t`, ...) from CPG's part, which is always included.
fn generate(probe: &Probe, service: &Service) -> Result<String, String> {
    let mut builder = bindgen::Builder::default()
        .header_contents(
            "corosync_sys_wrapper.h",
            &format!(
                "#include <corosync/corotypes.h>\n#include <{}>\n",
                service.header
            ),
        )
        .clang_args(
            probe
                .include_dirs
                .iter()
                .map(|p| format!("-I{}", p.display())),
        )
        // `struct iovec` comes from libc, so callers can build it with the libc crate.
        .blocklist_type("iovec")
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
    // Only the service's own names: `<netinet/in.h>` (cpg.h, cfg.h) and libqb's
    // `<qb/qbhdb.h>` (cmap.h) must not leak into this crate.
    for f in service.functions {
        builder = builder.allowlist_function(f);
    }
    for t in service.types {
        builder = builder.allowlist_type(t);
    }
    for v in service.vars {
        builder = builder.allowlist_var(v);
    }
    if service.feature.is_none() {
        builder = builder.raw_line("pub use libc::iovec;");
    } else {
        // Defined once, in CPG's part.
        builder = builder.blocklist_type("cs_.*");
    }
    if let Ok(target) = env::var("TARGET") {
        builder = builder.clang_arg(format!("--target={target}"));
    }
    builder
        .generate()
        .map(|b| b.to_string())
        .map_err(|e| format!("bindgen failed on <{}>: {e}", service.header))
}

/// Emits the cfgs for the header differences the crates use and the library version.
/// Each cfg is also metadata (`DEP_CPG_<CFG>=1`, e.g. `DEP_CPG_COROSYNC_HAS_QUORUM_MODEL_V1`)
/// so that a dependent build script can emit the same cfg for its own crate.
fn emit_header_cfgs(bindings: &str, version: Option<&str>) {
    for (cfg, needle) in HEADER_CFGS {
        if bindings.contains(needle) {
            println!("cargo::rustc-cfg={cfg}");
            println!("cargo::metadata={cfg}=1");
        }
    }
    println!(
        "cargo::rustc-env=COROSYNC_SYS_LIBCPG_VERSION={}",
        version.unwrap_or("unknown")
    );
}

/// Prints one message that says what to install and how to override the search, then
/// stops the build.
fn fail(why: &str, services: &[&Service]) -> ! {
    let names: Vec<&str> = services.iter().flat_map(|s| s.link).copied().collect();
    let debian: Vec<&str> = services.iter().map(|s| s.debian).collect();
    let mut msg = String::new();
    let _ = write!(
        msg,
        "\n\ncorosync-sys: cannot build the bindings to the corosync client libraries.\n\n  {}\n\n",
        why.replace('\n', "\n  ")
    );
    let _ = write!(
        msg,
        "corosync-sys needs the corosync client libraries of this build ({}), their\n\
         headers, libqb's pkg-config file, pkg-config itself, and libclang for bindgen.\n\
         Install them with:\n\n\
         \x20   Debian / Ubuntu:            apt-get install {} libqb-dev pkg-config libclang-dev\n\
         \x20   RHEL / CentOS / Rocky / Alma / Fedora:\n\
         \x20                               dnf install corosynclib-devel libqb-devel pkgconf-pkg-config clang-devel\n\
         \x20                               (on RHEL 9 and its rebuilds corosynclib-devel comes from EPEL 9, which needs CRB enabled)\n\n\
         Or point the build at an installation pkg-config does not know about:\n\n",
        names
            .iter()
            .map(|n| format!("lib{n}"))
            .collect::<Vec<_>>()
            .join(", "),
        debian.join(" "),
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
