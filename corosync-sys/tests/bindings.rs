//! The generated API: every libcpg function with its C signature, the constants with
//! their values, and a bundled snapshot that does not leak the socket API.

use core::ffi::{c_char, c_int, c_uint, c_void};

use corosync_sys::*;

mod support;
use support::resolve;

/// The 20 `cpg_*` functions and `cs_strerror`, as typed function pointers: this fails
/// to compile if a binding is missing or its signature changed.
#[test]
fn every_function_is_bound_with_its_c_signature() {
    type Ret = cs_error_t;
    type H = cpg_handle_t;
    type IterH = cpg_iteration_handle_t;
    let fns: [(&str, usize); 21] = [
        ("cpg_initialize", {
            let f: unsafe extern "C" fn(*mut H, *mut cpg_callbacks_t) -> Ret = cpg_initialize;
            f as usize
        }),
        ("cpg_model_initialize", {
            let f: unsafe extern "C" fn(
                *mut H,
                cpg_model_t,
                *mut cpg_model_data_t,
                *mut c_void,
            ) -> Ret = cpg_model_initialize;
            f as usize
        }),
        ("cpg_finalize", {
            let f: unsafe extern "C" fn(H) -> Ret = cpg_finalize;
            f as usize
        }),
        ("cpg_fd_get", {
            let f: unsafe extern "C" fn(H, *mut c_int) -> Ret = cpg_fd_get;
            f as usize
        }),
        ("cpg_max_atomic_msgsize_get", {
            let f: unsafe extern "C" fn(H, *mut u32) -> Ret = cpg_max_atomic_msgsize_get;
            f as usize
        }),
        ("cpg_context_get", {
            let f: unsafe extern "C" fn(H, *mut *mut c_void) -> Ret = cpg_context_get;
            f as usize
        }),
        ("cpg_context_set", {
            let f: unsafe extern "C" fn(H, *mut c_void) -> Ret = cpg_context_set;
            f as usize
        }),
        ("cpg_dispatch", {
            let f: unsafe extern "C" fn(H, cs_dispatch_flags_t) -> Ret = cpg_dispatch;
            f as usize
        }),
        ("cpg_join", {
            let f: unsafe extern "C" fn(H, *const cpg_name) -> Ret = cpg_join;
            f as usize
        }),
        ("cpg_leave", {
            let f: unsafe extern "C" fn(H, *const cpg_name) -> Ret = cpg_leave;
            f as usize
        }),
        ("cpg_mcast_joined", {
            let f: unsafe extern "C" fn(H, cpg_guarantee_t, *const libc::iovec, c_uint) -> Ret =
                cpg_mcast_joined;
            f as usize
        }),
        ("cpg_membership_get", {
            let f: unsafe extern "C" fn(H, *mut cpg_name, *mut cpg_address, *mut c_int) -> Ret =
                cpg_membership_get;
            f as usize
        }),
        ("cpg_local_get", {
            let f: unsafe extern "C" fn(H, *mut c_uint) -> Ret = cpg_local_get;
            f as usize
        }),
        ("cpg_flow_control_state_get", {
            let f: unsafe extern "C" fn(H, *mut cpg_flow_control_state_t) -> Ret =
                cpg_flow_control_state_get;
            f as usize
        }),
        ("cpg_zcb_alloc", {
            let f: unsafe extern "C" fn(H, usize, *mut *mut c_void) -> Ret = cpg_zcb_alloc;
            f as usize
        }),
        ("cpg_zcb_free", {
            let f: unsafe extern "C" fn(H, *mut c_void) -> Ret = cpg_zcb_free;
            f as usize
        }),
        ("cpg_zcb_mcast_joined", {
            let f: unsafe extern "C" fn(H, cpg_guarantee_t, *mut c_void, usize) -> Ret =
                cpg_zcb_mcast_joined;
            f as usize
        }),
        ("cpg_iteration_initialize", {
            let f: unsafe extern "C" fn(
                H,
                cpg_iteration_type_t,
                *const cpg_name,
                *mut IterH,
            ) -> Ret = cpg_iteration_initialize;
            f as usize
        }),
        ("cpg_iteration_next", {
            let f: unsafe extern "C" fn(IterH, *mut cpg_iteration_description_t) -> Ret =
                cpg_iteration_next;
            f as usize
        }),
        ("cpg_iteration_finalize", {
            let f: unsafe extern "C" fn(IterH) -> Ret = cpg_iteration_finalize;
            f as usize
        }),
        ("cs_strerror", {
            let f: unsafe extern "C" fn(cs_error_t) -> *const c_char = cs_strerror;
            f as usize
        }),
    ];
    // The typed pointers above are the signature check; here, each one must be the
    // symbol of that name in the corosync library the crate links (not, say, another
    // library's function of the same name, or a symbol of another name).
    for (name, addr) in fns {
        let (symbol, library) = resolve(addr);
        assert_eq!(symbol, name, "the binding of {name} resolved to {symbol}");
        let expected = if name == "cs_strerror" {
            "libcorosync_common.so"
        } else {
            "libcpg.so"
        };
        assert!(
            library.contains(expected),
            "{name} comes from {library}, not {expected}"
        );
    }
}

#[test]
fn size_and_model_constants() {
    assert_eq!(CPG_MAX_NAME_LENGTH, 128);
    assert_eq!(CPG_MEMBERS_MAX, 128);
    assert_eq!(CPG_MODEL_V1_DELIVER_INITIAL_TOTEM_CONF, 1);
    assert_eq!(CPG_MODEL_V1, 1);
    assert_eq!(core::mem::size_of::<cpg_name>(), 4 + 128);
    assert_eq!(core::mem::size_of::<cpg_address>(), 12);
}

#[test]
fn enum_constants_have_the_c_values() {
    let errors: [(cs_error_t, u32); 30] = [
        (CS_OK, 1),
        (CS_ERR_LIBRARY, 2),
        (CS_ERR_VERSION, 3),
        (CS_ERR_INIT, 4),
        (CS_ERR_TIMEOUT, 5),
        (CS_ERR_TRY_AGAIN, 6),
        (CS_ERR_INVALID_PARAM, 7),
        (CS_ERR_NO_MEMORY, 8),
        (CS_ERR_BAD_HANDLE, 9),
        (CS_ERR_BUSY, 10),
        (CS_ERR_ACCESS, 11),
        (CS_ERR_NOT_EXIST, 12),
        (CS_ERR_NAME_TOO_LONG, 13),
        (CS_ERR_EXIST, 14),
        (CS_ERR_NO_SPACE, 15),
        (CS_ERR_INTERRUPT, 16),
        (CS_ERR_NAME_NOT_FOUND, 17),
        (CS_ERR_NO_RESOURCES, 18),
        (CS_ERR_NOT_SUPPORTED, 19),
        (CS_ERR_BAD_OPERATION, 20),
        (CS_ERR_FAILED_OPERATION, 21),
        (CS_ERR_MESSAGE_ERROR, 22),
        (CS_ERR_QUEUE_FULL, 23),
        (CS_ERR_QUEUE_NOT_AVAILABLE, 24),
        (CS_ERR_BAD_FLAGS, 25),
        (CS_ERR_TOO_BIG, 26),
        (CS_ERR_NO_SECTIONS, 27),
        (CS_ERR_CONTEXT_NOT_FOUND, 28),
        (CS_ERR_TOO_MANY_GROUPS, 30),
        (CS_ERR_SECURITY, 100),
    ];
    for (got, want) in errors {
        assert_eq!(got, want);
    }

    assert_eq!(CS_DISPATCH_ONE, 1);
    assert_eq!(CS_DISPATCH_ALL, 2);
    assert_eq!(CS_DISPATCH_BLOCKING, 3);
    assert_eq!(CS_DISPATCH_ONE_NONBLOCKING, 4);

    assert_eq!(CPG_TYPE_UNORDERED, 0);
    assert_eq!(CPG_TYPE_FIFO, 1);
    assert_eq!(CPG_TYPE_AGREED, 2);
    assert_eq!(CPG_TYPE_SAFE, 3);

    assert_eq!(CPG_FLOW_CONTROL_DISABLED, 0);
    assert_eq!(CPG_FLOW_CONTROL_ENABLED, 1);

    assert_eq!(CPG_REASON_UNDEFINED, 0);
    assert_eq!(CPG_REASON_JOIN, 1);
    assert_eq!(CPG_REASON_LEAVE, 2);
    assert_eq!(CPG_REASON_NODEDOWN, 3);
    assert_eq!(CPG_REASON_NODEUP, 4);
    assert_eq!(CPG_REASON_PROCDOWN, 5);

    assert_eq!(CPG_ITERATION_NAME_ONLY, 1);
    assert_eq!(CPG_ITERATION_ONE_GROUP, 2);
    assert_eq!(CPG_ITERATION_ALL, 3);
}

/// `cs_strerror` comes from libcorosync_common and needs no daemon.
#[test]
fn cs_strerror_describes_try_again() {
    // SAFETY: cs_strerror returns a pointer to a static NUL-terminated string for any
    // value (unknown ones included).
    let text = unsafe { core::ffi::CStr::from_ptr(cs_strerror(CS_ERR_TRY_AGAIN)) };
    assert!(
        !text.to_bytes().is_empty(),
        "cs_strerror gave an empty text"
    );
}

/// The snapshot used on docs.rs has the same functions, and only libcpg's API.
#[test]
fn snapshot_has_every_function_and_no_socket_api() {
    let snapshot = include_str!("../src/snapshot/cpg.rs");
    for name in [
        "cpg_initialize",
        "cpg_model_initialize",
        "cpg_finalize",
        "cpg_fd_get",
        "cpg_max_atomic_msgsize_get",
        "cpg_context_get",
        "cpg_context_set",
        "cpg_dispatch",
        "cpg_join",
        "cpg_leave",
        "cpg_mcast_joined",
        "cpg_membership_get",
        "cpg_local_get",
        "cpg_flow_control_state_get",
        "cpg_zcb_alloc",
        "cpg_zcb_free",
        "cpg_zcb_mcast_joined",
        "cpg_iteration_initialize",
        "cpg_iteration_next",
        "cpg_iteration_finalize",
        "cs_strerror",
    ] {
        assert!(
            snapshot.contains(&format!("pub fn {name}(")),
            "the snapshot lacks {name}"
        );
    }
    for leak in ["inet6_", "sockaddr", "htons", "in6_addr"] {
        assert!(
            !snapshot.contains(leak),
            "the snapshot leaks the socket API ({leak})"
        );
    }
}
