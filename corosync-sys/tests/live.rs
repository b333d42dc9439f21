//! The raw bindings against a real daemon: a private single-node corosync (started by
//! `cpg-testkit` in its own network namespace). Needs root; fails, never skips, when
//! the daemon cannot be started.

use corosync_sys::*;

unsafe extern "C" fn deliver(
    _handle: cpg_handle_t,
    _group: *const cpg_name,
    _nodeid: u32,
    _pid: u32,
    _msg: *mut core::ffi::c_void,
    _len: usize,
) {
}

unsafe extern "C" fn confchg(
    _handle: cpg_handle_t,
    _group: *const cpg_name,
    _members: *const cpg_address,
    _members_len: usize,
    _left: *const cpg_address,
    _left_len: usize,
    _joined: *const cpg_address,
    _joined_len: usize,
) {
}

/// Initialize, ask for the local node id and the fd, finalize; after finalize the
/// handle is rejected.
#[test]
fn initialize_local_get_fd_finalize() {
    let node = cpg_testkit::shared();
    node.enter(|| {
        let mut callbacks = cpg_callbacks_t {
            cpg_deliver_fn: Some(deliver),
            cpg_confchg_fn: Some(confchg),
        };
        let mut handle: cpg_handle_t = 0;
        // SAFETY: both pointers are valid for the call; libcpg copies the callbacks.
        let rc = unsafe { cpg_initialize(&mut handle, &mut callbacks) };
        assert_eq!(
            rc,
            CS_OK,
            "cpg_initialize failed: {rc}\n{}",
            node.log_tail(20)
        );

        let mut local = 0u32;
        // SAFETY: `handle` is initialized; `local` is a valid out pointer.
        let rc = unsafe { cpg_local_get(handle, &mut local) };
        assert_eq!(rc, CS_OK, "cpg_local_get");
        assert_eq!(
            local,
            node.nodeid(),
            "cpg_local_get returned another node id"
        );

        let mut fd: core::ffi::c_int = -1;
        // SAFETY: `handle` is initialized; `fd` is a valid out pointer.
        let rc = unsafe { cpg_fd_get(handle, &mut fd) };
        assert_eq!(rc, CS_OK, "cpg_fd_get");
        assert!(fd >= 0, "cpg_fd_get gave fd {fd}");
        // SAFETY: F_GETFD only inspects the descriptor table.
        let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
        assert_ne!(
            flags,
            -1,
            "fd {fd} is not open: {}",
            std::io::Error::last_os_error()
        );
        // SAFETY: an all-zero `stat` is a valid value of this plain C struct.
        let mut st: libc::stat = unsafe { core::mem::zeroed() };
        // SAFETY: `fd` is open (checked above) and `st` is a valid out pointer.
        let rc = unsafe { libc::fstat(fd, &mut st) };
        assert_eq!(rc, 0, "fstat: {}", std::io::Error::last_os_error());
        assert_eq!(
            st.st_mode & libc::S_IFMT,
            libc::S_IFSOCK,
            "fd {fd} is not a socket"
        );

        // SAFETY: `handle` is initialized and not used by anything else.
        let rc = unsafe { cpg_finalize(handle) };
        assert_eq!(rc, CS_OK, "cpg_finalize");

        // SAFETY: libcpg validates handles in its handle database; a finalized handle
        // is looked up and rejected, not dereferenced.
        let rc = unsafe { cpg_local_get(handle, &mut local) };
        assert_eq!(rc, CS_ERR_BAD_HANDLE, "cpg_local_get after finalize");
    });
}
