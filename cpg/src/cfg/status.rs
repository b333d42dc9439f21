//! What cfg reports about nodes, as Rust values: [`NodeStatus`] and [`LinkStatus`]
//! (`corosync_cfg_node_status_get`), and the node addresses of
//! `corosync_cfg_get_node_addrs` as [`IpAddr`]s.

use std::ffi::c_char;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// A node as the local daemon's knet sees it: what `corosync-cfgtool -n` prints for
/// it, and what `corosync-cfgtool -s` prints per link.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct NodeStatus {
    /// The node.
    pub nodeid: u32,
    /// Whether knet can reach it on some link (for the local node: always).
    pub reachable: bool,
    /// Whether knet counts it as a remote node.
    pub remote: bool,
    /// Whether it is an external node (not in the node list).
    pub external: bool,
    /// The knet on-wire protocol versions it supports and uses: (min, max, current).
    pub onwire: (u8, u8, u8),
    /// Its links (up to 8), by link number: those enabled or with an address.
    pub links: Vec<LinkStatus>,
}

impl NodeStatus {
    /// The link with number `link`, if the node has it.
    pub fn link(&self, link: u8) -> Option<&LinkStatus> {
        self.links.iter().find(|l| l.link == link)
    }
}

/// One knet link to a node.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LinkStatus {
    /// The link number (`ringN_addr` of the node list: 0 to 7).
    pub link: u8,
    /// Whether the link is configured and up on this side.
    pub enabled: bool,
    /// Whether knet hears the node on it (heartbeats come through): `false` for a link
    /// to a node cut off by a partition, until it heals. `corosync-cfgtool -s` prints
    /// it per node as `connected` or `disconnected`; for the local node's own links
    /// (always `true` here, with its own address on both ends) it prints `localhost`.
    pub connected: bool,
    /// Whether the link was brought up by the other node from an address knet did not
    /// know in advance (knet's dynamic links; `dynconnected` in `corosync-cfgtool -n`):
    /// `false` for the links of a node list with fixed addresses.
    pub dynconnected: bool,
    /// The largest packet knet sends on it (path MTU less knet's overhead).
    pub mtu: u32,
    /// This node's address on the link, as knet prints it.
    pub source: String,
    /// The other node's address on the link, as knet prints it.
    pub remote: String,
}

impl LinkStatus {
    /// [`source`](Self::source) as an IP address, if it is one.
    pub fn source_ip(&self) -> Option<IpAddr> {
        parse_ip(&self.source)
    }

    /// [`remote`](Self::remote) as an IP address, if it is one.
    pub fn remote_ip(&self) -> Option<IpAddr> {
        parse_ip(&self.remote)
    }
}

fn parse_ip(text: &str) -> Option<IpAddr> {
    text.trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .ok()
}

/// A NUL-terminated string in a fixed C array, up to its NUL (or the array's end).
pub(crate) fn fixed_string(field: &[c_char]) -> String {
    let bytes: Vec<u8> = field
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// One link's fields as libcfg reports them.
#[cfg_attr(not(corosync_has_cfg_node_status), allow(dead_code))]
pub(crate) struct RawLink<'a> {
    pub(crate) enabled: u8,
    pub(crate) connected: u8,
    pub(crate) dynconnected: u8,
    pub(crate) mtu: u32,
    pub(crate) source: &'a [c_char],
    pub(crate) remote: &'a [c_char],
}

/// The links worth reporting: enabled, or with an address.
#[cfg_attr(not(corosync_has_cfg_node_status), allow(dead_code))]
pub(crate) fn links<'a>(raw: impl IntoIterator<Item = RawLink<'a>>) -> Vec<LinkStatus> {
    raw.into_iter()
        .enumerate()
        .filter_map(|(i, l)| {
            let link = LinkStatus {
                link: u8::try_from(i).ok()?,
                enabled: l.enabled != 0,
                connected: l.connected != 0,
                dynconnected: l.dynconnected != 0,
                mtu: l.mtu,
                source: fixed_string(l.source),
                remote: fixed_string(l.remote),
            };
            (link.enabled || !link.source.is_empty() || !link.remote.is_empty()).then_some(link)
        })
        .collect()
}

/// `AF_INET` and `AF_INET6` as libcfg writes them (Linux's values).
const AF_INET: u16 = libc::AF_INET as u16;
const AF_INET6: u16 = libc::AF_INET6 as u16;

/// The IP address in one `corosync_cfg_node_address_t`: a `sockaddr_in` or
/// `sockaddr_in6` of `len` bytes at the start of `address` (its port is 0 and means
/// nothing). `None` for another family or a length that does not fit it.
pub(crate) fn node_address(len: i32, address: &[c_char]) -> Option<IpAddr> {
    let bytes: Vec<u8> = address.iter().map(|&c| c as u8).collect();
    let len = usize::try_from(len).ok()?.min(bytes.len());
    let sockaddr = &bytes[..len];
    let family = u16::from_ne_bytes([*sockaddr.first()?, *sockaddr.get(1)?]);
    match family {
        AF_INET if len >= 8 => {
            let octets: [u8; 4] = sockaddr[4..8].try_into().ok()?;
            Some(IpAddr::V4(Ipv4Addr::from(octets)))
        }
        AF_INET6 if len >= 24 => {
            let octets: [u8; 16] = sockaddr[8..24].try_into().ok()?;
            Some(IpAddr::V6(Ipv6Addr::from(octets)))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(text: &str, size: usize) -> Vec<c_char> {
        let mut f = vec![0 as c_char; size];
        for (d, s) in f.iter_mut().zip(text.bytes()) {
            *d = s as c_char;
        }
        f
    }

    #[test]
    fn ipv4_and_ipv6_addresses_are_read_from_their_sockaddrs() {
        // What corosync 3.1.7 returned for 127.0.0.1: AF_INET, port 0, the address.
        let mut v4 = [0 as c_char; 28];
        let raw: [u8; 8] = [2, 0, 0, 0, 127, 0, 0, 1];
        for (d, s) in v4.iter_mut().zip(raw) {
            *d = s as c_char;
        }
        assert_eq!(node_address(16, &v4), Some(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        let mut v6 = [0 as c_char; 28];
        let family = (libc::AF_INET6 as u16).to_ne_bytes();
        v6[0] = family[0] as c_char;
        v6[1] = family[1] as c_char;
        let addr: Ipv6Addr = "fd00::1:2".parse().unwrap();
        for (d, s) in v6[8..24].iter_mut().zip(addr.octets()) {
            *d = s as c_char;
        }
        assert_eq!(node_address(28, &v6), Some(IpAddr::V6(addr)));
        // Too short for its family, an unknown family, a negative length.
        assert_eq!(node_address(6, &v4), None);
        assert_eq!(node_address(20, &v6), None);
        assert_eq!(node_address(16, &[0 as c_char; 28]), None);
        assert_eq!(node_address(-1, &v4), None);
    }

    #[test]
    fn links_keep_the_enabled_ones_and_those_with_addresses() {
        let a = field("10.213.0.1", 256);
        let b = field("10.213.0.3", 256);
        let empty = field("", 256);
        let raw = [
            RawLink {
                enabled: 1,
                connected: 0,
                dynconnected: 0,
                mtu: 1397,
                source: &a,
                remote: &b,
            },
            RawLink {
                enabled: 0,
                connected: 0,
                dynconnected: 0,
                mtu: 0,
                source: &empty,
                remote: &empty,
            },
            RawLink {
                enabled: 1,
                connected: 1,
                dynconnected: 1,
                mtu: 469,
                source: &empty,
                remote: &empty,
            },
        ];
        let links = links(raw);
        assert_eq!(links.len(), 2);
        assert_eq!(
            links[0],
            LinkStatus {
                link: 0,
                enabled: true,
                connected: false,
                dynconnected: false,
                mtu: 1397,
                source: "10.213.0.1".into(),
                remote: "10.213.0.3".into(),
            }
        );
        assert_eq!(links[0].remote_ip(), Some("10.213.0.3".parse().unwrap()));
        assert_eq!(
            (links[1].link, links[1].connected, links[1].dynconnected),
            (2, true, true)
        );
        assert_eq!(links[1].source_ip(), None);
        let status = NodeStatus {
            nodeid: 3,
            reachable: false,
            remote: true,
            external: false,
            onwire: (1, 1, 1),
            links,
        };
        assert_eq!(status.link(2).map(|l| l.mtu), Some(469));
        assert!(status.link(1).is_none());
    }

    #[test]
    fn fixed_strings_end_at_the_nul_or_the_field() {
        assert_eq!(fixed_string(&field("abc", 8)), "abc");
        assert_eq!(fixed_string(&field("abcdefgh", 8)), "abcdefgh");
        assert_eq!(parse_ip("[fd00::1]"), Some("fd00::1".parse().unwrap()));
    }
}
