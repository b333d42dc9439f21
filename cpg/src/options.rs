//! How a [`Handle`] is configured: [`Options`], and the [`Builder`] that takes closures
//! for the callbacks.

use crate::callbacks::{Closures, OnConfchg, OnDeliver, OnTotemConfchg};
use crate::connection::ConnectionRef;
use crate::error::Result;
use crate::handle::Handle;
use crate::types::{Confchg, Message, TotemConfchg};

/// Options for a new [`Handle`] (or `AsyncHandle`, feature `tokio`).
///
/// ```
/// let options = cpg::Options::default().initial_totem_conf(true).daemon_uid(Some(0));
/// assert!(options.initial_totem_conf);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Options {
    /// Deliver the current totem membership (ring id and nodes) right after join, not
    /// only when it changes (`CPG_MODEL_V1_DELIVER_INITIAL_TOTEM_CONF`). Default: off.
    pub initial_totem_conf: bool,
    /// The user id the daemon must run as, checked on the connection's socket
    /// (`SO_PEERCRED`) right after connecting; `None` skips the check. Default:
    /// `Some(0)` (root, as corosync runs).
    ///
    /// corosync's IPC socket is an abstract Unix socket: any local process can bind
    /// its name before corosync starts and then impersonate it. A connection whose
    /// peer runs as another user fails with [`Error::UntrustedDaemon`](crate::Error::UntrustedDaemon).
    pub daemon_uid: Option<u32>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            initial_totem_conf: false,
            daemon_uid: Some(0),
        }
    }
}

impl Options {
    /// Sets [`initial_totem_conf`](Self#structfield.initial_totem_conf).
    pub fn initial_totem_conf(mut self, yes: bool) -> Self {
        self.initial_totem_conf = yes;
        self
    }

    /// Sets [`daemon_uid`](Self#structfield.daemon_uid).
    pub fn daemon_uid(mut self, uid: Option<u32>) -> Self {
        self.daemon_uid = uid;
        self
    }
}

/// Builds a [`Handle`] from closures. Unset callbacks do nothing.
///
/// Each closure gets the handle's [`ConnectionRef`] (to send, join, leave or query from
/// inside the callback) and the event.
#[derive(Debug)]
#[must_use = "a builder does nothing until .build()"]
pub struct Builder<D, C, T> {
    callbacks: Closures<D, C, T>,
    options: Options,
}

impl<D: OnDeliver, C: OnConfchg, T: OnTotemConfchg> Builder<D, C, T> {
    /// A builder with these callbacks and default options.
    pub(crate) fn new(callbacks: Closures<D, C, T>) -> Self {
        Builder {
            callbacks,
            options: Options::default(),
        }
    }

    /// Called for every message delivered to a joined group.
    pub fn on_deliver<F>(self, f: F) -> Builder<F, C, T>
    where
        F: FnMut(&ConnectionRef, Message<'_>) + Send + 'static,
    {
        Builder {
            callbacks: Closures {
                deliver: f,
                confchg: self.callbacks.confchg,
                totem: self.callbacks.totem,
            },
            options: self.options,
        }
    }

    /// Called when the membership of a joined group changes.
    pub fn on_confchg<F>(self, f: F) -> Builder<D, F, T>
    where
        F: FnMut(&ConnectionRef, Confchg<'_>) + Send + 'static,
    {
        Builder {
            callbacks: Closures {
                deliver: self.callbacks.deliver,
                confchg: f,
                totem: self.callbacks.totem,
            },
            options: self.options,
        }
    }

    /// Called when the cluster's node membership (totem ring) changes.
    pub fn on_totem_confchg<F>(self, f: F) -> Builder<D, C, F>
    where
        F: FnMut(&ConnectionRef, TotemConfchg<'_>) + Send + 'static,
    {
        Builder {
            callbacks: Closures {
                deliver: self.callbacks.deliver,
                confchg: self.callbacks.confchg,
                totem: f,
            },
            options: self.options,
        }
    }

    /// Also deliver the current totem membership right after join
    /// ([`Options::initial_totem_conf`]).
    pub fn initial_totem_conf(mut self, yes: bool) -> Self {
        self.options.initial_totem_conf = yes;
        self
    }

    /// The user id the daemon must run as, or `None` for no check
    /// ([`Options::daemon_uid`]; default root).
    pub fn daemon_uid(mut self, uid: Option<u32>) -> Self {
        self.options.daemon_uid = uid;
        self
    }

    /// All options at once, replacing those set so far.
    pub fn options(mut self, options: Options) -> Self {
        self.options = options;
        self
    }

    /// Connects to the local corosync daemon.
    pub fn build(self) -> Result<Handle> {
        Handle::with_options(self.callbacks, self.options)
    }
}
