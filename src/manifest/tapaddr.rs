//! A tap-networked VM's static address: `vm.network.address` (`A.B.C.D/PREFIX`), the address
//! the Nth replica of a WorkerSet gets, and the kernel `ip=` argument the agent reads it from
//! (the agent has no DHCP client, as on the boards).

use std::net::Ipv4Addr;

/// An IPv4 address on a network of `prefix` bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TapAddress {
    pub ip: Ipv4Addr,
    pub prefix: u8,
}

impl TapAddress {
    /// `A.B.C.D/PREFIX`; the prefix is required (a /24 written out is not a guess we make) and
    /// must leave room for a host and a broadcast address, and the address must be a host.
    pub fn parse(s: &str) -> Result<TapAddress, String> {
        let (ip, prefix) = s
            .split_once('/')
            .ok_or_else(|| format!("`{s}`: expected A.B.C.D/PREFIX, e.g. `10.77.0.10/24`"))?;
        let ip: Ipv4Addr = ip
            .parse()
            .map_err(|_| format!("`{s}`: `{ip}` is not an IPv4 address"))?;
        let prefix: u8 = prefix
            .parse()
            .ok()
            .filter(|p| (8..=30).contains(p))
            .ok_or_else(|| format!("`{s}`: the prefix must be 8 to 30"))?;
        let a = TapAddress { ip, prefix };
        if !a.is_host() {
            return Err(format!(
                "`{s}` is the network's {} address, not a host's",
                if a.host_part() == 0 {
                    "own"
                } else {
                    "broadcast"
                }
            ));
        }
        Ok(a)
    }

    pub fn netmask(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::MAX << (32 - u32::from(self.prefix)))
    }

    fn host_part(&self) -> u32 {
        u32::from(self.ip) & !u32::from(self.netmask())
    }

    fn is_host(&self) -> bool {
        let h = self.host_part();
        h != 0 && h != !u32::from(self.netmask())
    }

    /// The address `n` hosts further on (replica `n` of a WorkerSet), if it is still a host
    /// of the same network.
    pub fn offset(&self, n: u32) -> Option<TapAddress> {
        let ip = u32::from(self.ip).checked_add(n)?;
        let a = TapAddress {
            ip: Ipv4Addr::from(ip),
            prefix: self.prefix,
        };
        let same_net =
            ip & u32::from(self.netmask()) == u32::from(self.ip) & u32::from(self.netmask());
        (same_net && a.is_host()).then_some(a)
    }

    /// The kernel's `ip=<client>::<gateway>:<netmask>:<hostname>:<device>:off`, which the agent
    /// (src/agent/cmdline.rs) applies to the VM's only NIC.
    pub fn kernel_arg(&self, gateway: Option<Ipv4Addr>) -> String {
        format!(
            "ip={}::{}:{}::eth0:off",
            self.ip,
            gateway.map(|g| g.to_string()).unwrap_or_default(),
            self.netmask()
        )
    }
}

impl std::fmt::Display for TapAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.ip, self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_hosts_and_refuses_the_rest() {
        let a = TapAddress::parse("10.77.0.10/24").expect("valid");
        assert_eq!(a.ip, Ipv4Addr::new(10, 77, 0, 10));
        assert_eq!(a.netmask(), Ipv4Addr::new(255, 255, 255, 0));
        assert_eq!(
            TapAddress::parse("172.16.4.1/22").map(|a| a.netmask()),
            Ok(Ipv4Addr::new(255, 255, 252, 0))
        );
        for bad in [
            "10.77.0.10",
            "10.77.0/24",
            "10.77.0.10/31",
            "10.77.0.10/x",
            "10.77.0.0/24",
            "10.77.0.255/24",
        ] {
            assert!(TapAddress::parse(bad).is_err(), "{bad}");
        }
        assert!(
            TapAddress::parse("10.77.0.255/24")
                .unwrap_err()
                .contains("broadcast")
        );
    }

    #[test]
    fn replicas_count_up_within_the_network() {
        let a = TapAddress::parse("10.77.0.250/24").expect("valid");
        assert_eq!(a.offset(0), Some(a));
        assert_eq!(
            a.offset(4).map(|a| a.to_string()).as_deref(),
            Some("10.77.0.254/24")
        );
        assert_eq!(a.offset(5), None, "the broadcast address");
        assert_eq!(a.offset(6), None, "another network");
        let top = TapAddress::parse("255.255.255.254/24").expect("valid");
        assert_eq!(top.offset(2), None);
    }

    #[test]
    fn the_kernel_argument_is_what_the_agent_parses() {
        let a = TapAddress::parse("10.77.0.11/24").expect("valid");
        assert_eq!(
            a.kernel_arg(None),
            "ip=10.77.0.11:::255.255.255.0::eth0:off"
        );
        assert_eq!(
            a.kernel_arg(Some(Ipv4Addr::new(10, 77, 0, 1))),
            "ip=10.77.0.11::10.77.0.1:255.255.255.0::eth0:off"
        );
        #[cfg(feature = "agent")]
        {
            use crate::agent::cmdline::{IpSetting, parse_ip};
            let arg = a.kernel_arg(Some(Ipv4Addr::new(10, 77, 0, 1)));
            let Ok(IpSetting::Static(ip)) = parse_ip(arg.trim_start_matches("ip=")) else {
                panic!("the agent does not read {arg}");
            };
            assert_eq!(ip.client, Ipv4Addr::new(10, 77, 0, 11));
            assert_eq!(ip.gateway, Some(Ipv4Addr::new(10, 77, 0, 1)));
            assert_eq!(ip.netmask, Ipv4Addr::new(255, 255, 255, 0));
            assert_eq!(ip.device, "eth0");
            let Ok(IpSetting::Static(ip)) = parse_ip(a.kernel_arg(None).trim_start_matches("ip="))
            else {
                panic!("the agent does not read it without a gateway");
            };
            assert_eq!(ip.gateway, None);
        }
    }
}
