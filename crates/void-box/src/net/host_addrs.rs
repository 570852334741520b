//! The host's own addresses, read when a connection is about to be made:
//! a destination that is one of them reaches the host itself, which only
//! [`HOST_ALIAS`](super::HOST_ALIAS) or an explicit CIDR rule may do, even
//! when the address is public.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Every address of every interface of the host (empty if the kernel
/// will not say, which leaves the other checks standing).
pub fn host_addresses() -> HashSet<IpAddr> {
    let mut found = HashSet::new();
    let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `list` with a linked list it allocated, or
    // fails and leaves it alone; we read it only on success and free it
    // exactly once below.
    if unsafe { libc::getifaddrs(&mut list) } != 0 {
        return found;
    }
    let mut at = list;
    while !at.is_null() {
        // SAFETY: `at` is a node of the list getifaddrs returned, which
        // stays valid until freeifaddrs; `ifa_addr` is null or points at a
        // sockaddr of the family it names, which we check before the cast.
        unsafe {
            let node = &*at;
            if let Some(addr) = node.ifa_addr.as_ref() {
                match i32::from(addr.sa_family) {
                    libc::AF_INET => {
                        let v4 = &*(node.ifa_addr as *const libc::sockaddr_in);
                        found.insert(IpAddr::V4(Ipv4Addr::from(u32::from_be(v4.sin_addr.s_addr))));
                    }
                    libc::AF_INET6 => {
                        let v6 = &*(node.ifa_addr as *const libc::sockaddr_in6);
                        found.insert(IpAddr::V6(Ipv6Addr::from(v6.sin6_addr.s6_addr)));
                    }
                    _ => {}
                }
            }
            at = node.ifa_next;
        }
    }
    // SAFETY: `list` came from a successful getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(list) };
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_loopback_address_is_among_them() {
        let found = host_addresses();
        assert!(
            found.contains(&IpAddr::V4(Ipv4Addr::LOCALHOST)),
            "{found:?}"
        );
    }
}
