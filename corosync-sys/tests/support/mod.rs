//! What the binding tests share.

use core::ffi::{c_char, c_void};

/// The symbol name and the file of the shared object that holds `addr` (`dladdr`).
pub fn resolve(addr: usize) -> (String, String) {
    // SAFETY: Dl_info is plain data; all-zero is a valid value (null pointers).
    let mut info: libc::Dl_info = unsafe { core::mem::zeroed() };
    // SAFETY: dladdr only reads the loader's tables for the address and fills `info`.
    let found = unsafe { libc::dladdr(addr as *const c_void, &mut info) };
    assert_ne!(found, 0, "no shared object holds address {addr:#x}");
    let text = |p: *const c_char| {
        if p.is_null() {
            String::from("(none)")
        } else {
            // SAFETY: dladdr's strings are NUL-terminated and live as long as the
            // object stays loaded (the whole test).
            unsafe { core::ffi::CStr::from_ptr(p) }
                .to_string_lossy()
                .into_owned()
        }
    };
    (text(info.dli_sname), text(info.dli_fname))
}
