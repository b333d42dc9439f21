//! The services behind cargo features (quorum, votequorum, cmap, cfg): every function
//! of each header bound with its C signature and resolved to its own library, the
//! constants with their C values, the bundled snapshots equal to what this build
//! generated, and a live call of each against a private daemon.
#![cfg(any(
    feature = "quorum",
    feature = "votequorum",
    feature = "cmap",
    feature = "cfg"
))]

use core::ffi::{c_char, c_int, c_uint, c_void};

use corosync_sys::*;

mod support;
use support::resolve;

/// `(name, library, address)` of each function, as typed function pointers: this fails
/// to compile if a binding is missing or its signature changed.
macro_rules! bound {
    ($library:literal; $( $name:ident ( $($arg:ty),* ); )*) => {
        vec![ $( (stringify!($name), $library, {
            let f: unsafe extern "C" fn($($arg),*) -> cs_error_t = $name;
            f as usize
        }), )* ]
    };
}

/// Each typed pointer must be the symbol of that name in the library the feature links.
fn check_resolved(fns: Vec<(&str, &str, usize)>, count: usize) {
    assert_eq!(fns.len(), count, "the list of functions is incomplete");
    for (name, library, addr) in fns {
        let (symbol, file) = resolve(addr);
        assert_eq!(symbol, name, "the binding of {name} resolved to {symbol}");
        assert!(
            file.contains(&format!("{library}.so")),
            "{name} comes from {file}, not {library}.so"
        );
    }
}

/// The bundled snapshot of a part (used on docs.rs) is exactly what this build
/// generated from corosync 3.1.7's headers (the snapshots' version; other versions
/// may differ), and has no socket or libqb API.
fn check_snapshot(snapshot: &str, generated: &str) {
    let body: String = snapshot
        .lines()
        .skip_while(|l| l.starts_with("//"))
        .map(|l| format!("{l}\n"))
        .collect();
    if LIBCPG_VERSION == "3.1.7" {
        assert_eq!(
            body, generated,
            "the bundled snapshot differs from the bindings generated from corosync 3.1.7: \
             copy target/*/build/corosync-sys-*/out/<part>.rs over src/snapshot/ (keeping its \
             three comment lines)"
        );
    }
    for leak in ["inet6_", "sockaddr_in", "htons", "in6_addr", "qb_"] {
        assert!(!body.contains(leak), "the snapshot leaks {leak}");
    }
}

#[cfg(feature = "quorum")]
mod quorum {
    use super::*;

    #[test]
    fn every_quorum_function_is_bound_from_libquorum() {
        type H = quorum_handle_t;
        let fns = bound! { "libquorum";
            quorum_initialize(*mut H, *mut quorum_callbacks_t, *mut u32);
            quorum_model_initialize(*mut H, quorum_model_t, *mut quorum_model_data_t, *mut u32, *mut c_void);
            quorum_finalize(H);
            quorum_fd_get(H, *mut c_int);
            quorum_dispatch(H, cs_dispatch_flags_t);
            quorum_getquorate(H, *mut c_int);
            quorum_trackstart(H, c_uint);
            quorum_trackstop(H);
            quorum_context_set(H, *const c_void);
            quorum_context_get(H, *mut *const c_void);
        };
        check_resolved(fns, 10);
    }

    #[test]
    fn quorum_constants_have_the_c_values() {
        assert_eq!(QUORUM_MODEL_V0, 0);
        assert_eq!(QUORUM_MODEL_V1, 1);
        assert_eq!(QUORUM_FREE, 0);
        assert_eq!(QUORUM_SET, 1);
        // The v1 ring id is the same pair as CPG's.
        assert_eq!(
            core::mem::size_of::<quorum_ring_id>(),
            core::mem::size_of::<cpg_ring_id>()
        );
    }

    #[test]
    fn the_quorum_snapshot_is_what_this_build_generated() {
        check_snapshot(
            include_str!("../src/snapshot/quorum.rs"),
            include_str!(concat!(env!("OUT_DIR"), "/quorum.rs")),
        );
    }

    /// Against a daemon without a quorum provider (the shared test node): the library
    /// connects, reports the quorum type `QUORUM_FREE` (no provider), and calls the
    /// cluster quorate (corosync 3.1.7: without a provider nothing is ever inquorate).
    #[test]
    fn without_a_provider_quorum_is_free_and_quorate() {
        let node = cpg_testkit::shared();
        node.enter(|| {
            let mut handle: quorum_handle_t = 0;
            let mut quorum_type = u32::MAX;
            let mut callbacks = quorum_callbacks_t::default();
            // SAFETY: valid out pointers; libquorum copies the callbacks (none set).
            let rc = unsafe { quorum_initialize(&mut handle, &mut callbacks, &mut quorum_type) };
            assert_eq!(rc, CS_OK, "quorum_initialize\n{}", node.log_tail(20));
            assert_eq!(quorum_type, QUORUM_FREE, "the shared node has no provider");
            let mut quorate: c_int = -1;
            // SAFETY: `handle` is initialized; `quorate` is a valid out pointer.
            let rc = unsafe { quorum_getquorate(handle, &mut quorate) };
            assert_eq!((rc, quorate), (CS_OK, 1), "quorum_getquorate");
            // SAFETY: `handle` is initialized and finalized once.
            assert_eq!(unsafe { quorum_finalize(handle) }, CS_OK);
        });
    }
}

#[cfg(feature = "votequorum")]
mod votequorum {
    use super::*;

    #[test]
    fn every_votequorum_function_is_bound_from_libvotequorum() {
        type H = votequorum_handle_t;
        let fns = bound! { "libvotequorum";
            votequorum_initialize(*mut H, *mut votequorum_callbacks_t);
            votequorum_finalize(H);
            votequorum_dispatch(H, cs_dispatch_flags_t);
            votequorum_fd_get(H, *mut c_int);
            votequorum_getinfo(H, c_uint, *mut votequorum_info);
            votequorum_setexpected(H, c_uint);
            votequorum_setvotes(H, c_uint, c_uint);
            votequorum_trackstart(H, u64, c_uint);
            votequorum_trackstop(H);
            votequorum_context_get(H, *mut *mut c_void);
            votequorum_context_set(H, *mut c_void);
            votequorum_qdevice_register(H, *const c_char);
            votequorum_qdevice_unregister(H, *const c_char);
            votequorum_qdevice_update(H, *const c_char, *const c_char);
            votequorum_qdevice_poll(H, *const c_char, c_uint, votequorum_ring_id_t);
            votequorum_qdevice_master_wins(H, *const c_char, c_uint);
        };
        check_resolved(fns, 16);
    }

    #[test]
    fn votequorum_constants_have_the_c_values() {
        assert_eq!(VOTEQUORUM_INFO_TWONODE, 1);
        assert_eq!(VOTEQUORUM_INFO_QUORATE, 2);
        assert_eq!(VOTEQUORUM_INFO_WAIT_FOR_ALL, 4);
        assert_eq!(VOTEQUORUM_INFO_LAST_MAN_STANDING, 8);
        assert_eq!(VOTEQUORUM_INFO_AUTO_TIE_BREAKER, 16);
        assert_eq!(VOTEQUORUM_INFO_ALLOW_DOWNSCALE, 32);
        assert_eq!(VOTEQUORUM_INFO_QDEVICE_REGISTERED, 64);
        assert_eq!(VOTEQUORUM_INFO_QDEVICE_ALIVE, 128);
        assert_eq!(VOTEQUORUM_INFO_QDEVICE_CAST_VOTE, 256);
        assert_eq!(VOTEQUORUM_INFO_QDEVICE_MASTER_WINS, 512);
        assert_eq!(VOTEQUORUM_QDEVICE_NODEID, 0);
        assert_eq!(VOTEQUORUM_QDEVICE_MAX_NAME_LEN, 255);
        assert_eq!(VOTEQUORUM_NODESTATE_MEMBER, 1);
        assert_eq!(VOTEQUORUM_NODESTATE_DEAD, 2);
        assert_eq!(VOTEQUORUM_NODESTATE_LEAVING, 3);
        assert_eq!(
            core::mem::size_of::<votequorum_info>(),
            9 * 4 + VOTEQUORUM_QDEVICE_MAX_NAME_LEN as usize + 1,
            "votequorum_info: nine unsigned ints and the device name (padded)"
        );
    }

    #[test]
    fn the_votequorum_snapshot_is_what_this_build_generated() {
        check_snapshot(
            include_str!("../src/snapshot/votequorum.rs"),
            include_str!(concat!(env!("OUT_DIR"), "/votequorum.rs")),
        );
    }

    /// Against a daemon without a quorum provider (the shared test node): votequorum
    /// is not loaded, and corosync 3.1.7 refuses the connection with
    /// `CS_ERR_LIBRARY`, the code a missing daemon gives too (a safe layer must tell
    /// the two apart some other way, for example by the quorum type).
    #[test]
    fn without_a_provider_votequorum_refuses_the_connection() {
        let node = cpg_testkit::shared();
        node.enter(|| {
            let mut handle: votequorum_handle_t = 0;
            let mut callbacks = votequorum_callbacks_t::default();
            // SAFETY: valid pointers; libvotequorum copies the callbacks (none set).
            let rc = unsafe { votequorum_initialize(&mut handle, &mut callbacks) };
            assert_eq!(
                rc, CS_ERR_LIBRARY,
                "votequorum_initialize without a provider"
            );
        });
    }
}

#[cfg(feature = "cmap")]
mod cmap {
    use super::*;

    #[test]
    fn every_cmap_function_is_bound_from_libcmap() {
        type H = cmap_handle_t;
        type K = *const c_char;
        let fns = bound! { "libcmap";
            cmap_initialize(*mut H);
            cmap_initialize_map(*mut H, cmap_map_t);
            cmap_finalize(H);
            cmap_fd_get(H, *mut c_int);
            cmap_dispatch(H, cs_dispatch_flags_t);
            cmap_context_get(H, *mut *const c_void);
            cmap_context_set(H, *const c_void);
            cmap_set(H, K, *const c_void, usize, cmap_value_types_t);
            cmap_set_int8(H, K, i8);
            cmap_set_uint8(H, K, u8);
            cmap_set_int16(H, K, i16);
            cmap_set_uint16(H, K, u16);
            cmap_set_int32(H, K, i32);
            cmap_set_uint32(H, K, u32);
            cmap_set_int64(H, K, i64);
            cmap_set_uint64(H, K, u64);
            cmap_set_float(H, K, f32);
            cmap_set_double(H, K, f64);
            cmap_set_string(H, K, *const c_char);
            cmap_delete(H, K);
            cmap_get(H, K, *mut c_void, *mut usize, *mut cmap_value_types_t);
            cmap_get_int8(H, K, *mut i8);
            cmap_get_uint8(H, K, *mut u8);
            cmap_get_int16(H, K, *mut i16);
            cmap_get_uint16(H, K, *mut u16);
            cmap_get_int32(H, K, *mut i32);
            cmap_get_uint32(H, K, *mut u32);
            cmap_get_int64(H, K, *mut i64);
            cmap_get_uint64(H, K, *mut u64);
            cmap_get_float(H, K, *mut f32);
            cmap_get_double(H, K, *mut f64);
            cmap_get_string(H, K, *mut *mut c_char);
            cmap_inc(H, K);
            cmap_dec(H, K);
            cmap_iter_init(H, K, *mut cmap_iter_handle_t);
            cmap_iter_next(H, cmap_iter_handle_t, *mut c_char, *mut usize, *mut cmap_value_types_t);
            cmap_iter_finalize(H, cmap_iter_handle_t);
            cmap_track_add(H, K, i32, cmap_notify_fn_t, *mut c_void, *mut cmap_track_handle_t);
            cmap_track_delete(H, cmap_track_handle_t);
        };
        check_resolved(fns, 39);
    }

    #[test]
    fn cmap_constants_have_the_c_values() {
        assert_eq!(CMAP_KEYNAME_MAXLEN, 255);
        assert_eq!(CMAP_KEYNAME_MINLEN, 3);
        assert_eq!(CMAP_TRACK_DELETE, 1);
        assert_eq!(CMAP_TRACK_MODIFY, 2);
        assert_eq!(CMAP_TRACK_ADD, 4);
        assert_eq!(CMAP_TRACK_PREFIX, 8);
        let types = [
            CMAP_VALUETYPE_INT8,
            CMAP_VALUETYPE_UINT8,
            CMAP_VALUETYPE_INT16,
            CMAP_VALUETYPE_UINT16,
            CMAP_VALUETYPE_INT32,
            CMAP_VALUETYPE_UINT32,
            CMAP_VALUETYPE_INT64,
            CMAP_VALUETYPE_UINT64,
            CMAP_VALUETYPE_FLOAT,
            CMAP_VALUETYPE_DOUBLE,
            CMAP_VALUETYPE_STRING,
            CMAP_VALUETYPE_BINARY,
        ];
        assert_eq!(types, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
        assert_eq!(
            (CMAP_MAP_DEFAULT, CMAP_MAP_ICMAP, CMAP_MAP_STATS),
            (0, 0, 1)
        );
    }

    #[test]
    fn the_cmap_snapshot_is_what_this_build_generated() {
        check_snapshot(
            include_str!("../src/snapshot/cmap.rs"),
            include_str!(concat!(env!("OUT_DIR"), "/cmap.rs")),
        );
    }

    /// Against the shared test node: `totem.cluster_name` reads back as a string, and
    /// a key that does not exist is `CS_ERR_NOT_EXIST`.
    #[test]
    fn cmap_reads_the_cluster_name() {
        let node = cpg_testkit::shared();
        node.enter(|| {
            let mut handle: cmap_handle_t = 0;
            // SAFETY: valid out pointer.
            let rc = unsafe { cmap_initialize(&mut handle) };
            assert_eq!(rc, CS_OK, "cmap_initialize\n{}", node.log_tail(20));
            let mut value: *mut c_char = core::ptr::null_mut();
            // SAFETY: `handle` is initialized; the key is NUL-terminated; libcmap
            // allocates the string with malloc and hands it over.
            let rc = unsafe { cmap_get_string(handle, c"totem.cluster_name".as_ptr(), &mut value) };
            assert_eq!(rc, CS_OK, "cmap_get_string(totem.cluster_name)");
            assert!(!value.is_null());
            // SAFETY: a NUL-terminated string from libcmap, freed right after.
            let name = unsafe { core::ffi::CStr::from_ptr(value) }
                .to_string_lossy()
                .into_owned();
            // SAFETY: allocated by libcmap with malloc, not used after this.
            unsafe { libc::free(value.cast()) };
            assert!(!name.is_empty(), "an empty cluster name");

            let mut n = 0u32;
            // SAFETY: as above, with a u32 out pointer.
            let rc = unsafe { cmap_get_uint32(handle, c"no.such.key".as_ptr(), &mut n) };
            assert_eq!(rc, CS_ERR_NOT_EXIST);
            // SAFETY: `handle` is initialized and finalized once.
            assert_eq!(unsafe { cmap_finalize(handle) }, CS_OK);
        });
    }
}

#[cfg(feature = "cfg")]
mod cfg {
    use super::*;

    #[test]
    fn every_cfg_function_is_bound_from_libcfg() {
        type H = corosync_cfg_handle_t;
        let fns = bound! { "libcfg";
            corosync_cfg_initialize(*mut H, *const corosync_cfg_callbacks_t);
            corosync_cfg_fd_get(H, *mut i32);
            corosync_cfg_dispatch(H, cs_dispatch_flags_t);
            corosync_cfg_finalize(H);
            corosync_cfg_ring_status_get(H, *mut *mut *mut c_char, *mut *mut *mut c_char, *mut c_uint);
            corosync_cfg_node_status_get(H, c_uint, corosync_cfg_node_status_version_t, *mut c_void);
            corosync_cfg_kill_node(H, c_uint, *const c_char);
            corosync_cfg_trackstart(H, u8);
            corosync_cfg_trackstop(H);
            corosync_cfg_try_shutdown(H, corosync_cfg_shutdown_flags_t);
            corosync_cfg_replyto_shutdown(H, corosync_cfg_shutdown_reply_flags_t);
            corosync_cfg_get_node_addrs(H, c_uint, usize, *mut c_int, *mut corosync_cfg_node_address_t);
            corosync_cfg_local_get(H, *mut c_uint);
            corosync_cfg_reload_config(H);
            corosync_cfg_reopen_log_files(H);
        };
        check_resolved(fns, 15);
    }

    #[test]
    fn cfg_constants_have_the_c_values() {
        assert_eq!(COROSYNC_CFG_SHUTDOWN_FLAG_REQUEST, 0);
        assert_eq!(COROSYNC_CFG_SHUTDOWN_FLAG_REGARDLESS, 1);
        assert_eq!(COROSYNC_CFG_SHUTDOWN_FLAG_IMMEDIATE, 2);
        assert_eq!(COROSYNC_CFG_SHUTDOWN_FLAG_NO, 0);
        assert_eq!(COROSYNC_CFG_SHUTDOWN_FLAG_YES, 1);
        assert_eq!(CFG_MAX_HOST_LEN, 256);
        assert_eq!(CFG_MAX_LINKS, 8);
        assert_eq!(CFG_NODE_STATUS_V1, 1);
    }

    #[test]
    fn the_cfg_snapshot_is_what_this_build_generated() {
        check_snapshot(
            include_str!("../src/snapshot/cfg.rs"),
            include_str!(concat!(env!("OUT_DIR"), "/cfg.rs")),
        );
    }

    /// Against the shared test node: the local node id through cfg is the node's.
    #[test]
    fn cfg_reports_the_local_node_id() {
        let node = cpg_testkit::shared();
        node.enter(|| {
            let mut handle: corosync_cfg_handle_t = 0;
            let callbacks = corosync_cfg_callbacks_t::default();
            // SAFETY: valid pointers; libcfg copies the callbacks (none set).
            let rc = unsafe { corosync_cfg_initialize(&mut handle, &callbacks) };
            assert_eq!(rc, CS_OK, "corosync_cfg_initialize\n{}", node.log_tail(20));
            let mut local: c_uint = 0;
            // SAFETY: `handle` is initialized; valid out pointer.
            let rc = unsafe { corosync_cfg_local_get(handle, &mut local) };
            assert_eq!(rc, CS_OK);
            assert_eq!(local, node.nodeid());
            // SAFETY: `handle` is initialized and finalized once.
            assert_eq!(unsafe { corosync_cfg_finalize(handle) }, CS_OK);
        });
    }
}
