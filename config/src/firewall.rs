//! `provider.firewall` and `provider.firewall_sources`: which provider firewall fences the
//! rented servers, and the ingress addresses a dayshift-managed one lets in.

use std::fmt;
use std::net::{IpAddr, ToSocketAddrs};
use std::str::FromStr;

use crate::settings::Config;

/// The `provider.firewall` value that makes dayshift manage the firewall itself.
pub const AUTO: &str = "auto";

/// What `provider.firewall` asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FirewallSetting {
    /// A firewall (Hetzner Cloud Firewall, Scaleway security group) the operator made,
    /// attached by name to every created server.
    Named(String),
    /// `"auto"`: dayshift keeps one firewall per cluster that lets in only the node port
    /// and SSH, only from the ingress.
    Auto,
}

impl FirewallSetting {
    /// Reads the setting's text: `"auto"` or a name.
    pub fn from_text(text: &str) -> Self {
        if text == AUTO {
            FirewallSetting::Auto
        } else {
            FirewallSetting::Named(text.to_string())
        }
    }
}

/// An IPv4 or IPv6 network in CIDR notation, with no host bits set (`203.0.113.7/32`,
/// `2001:db8::/64`). A bare address reads as the one-host network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// The one-host network of `ip` (`/32` or `/128`).
    pub fn host(ip: IpAddr) -> Self {
        let prefix = if ip.is_ipv4() { 32 } else { 128 };
        Cidr { addr: ip, prefix }
    }

    /// The network address.
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The prefix length.
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// True for an IPv4 network.
    pub fn is_ipv4(&self) -> bool {
        self.addr.is_ipv4()
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl FromStr for Cidr {
    type Err = String;

    /// Parses `ADDR/PREFIX` or a bare address; host bits must be zero.
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || {
            format!(
                "expected an address or network in CIDR notation such as \"203.0.113.7/32\" or \"2001:db8::1/128\", found \"{s}\""
            )
        };
        let (addr_text, prefix_text) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr_text.trim().parse().map_err(|_| bad())?;
        let max = if addr.is_ipv4() { 32u8 } else { 128 };
        let prefix = match prefix_text {
            None => max,
            Some(p) if !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()) => {
                p.parse::<u8>().map_err(|_| bad())?
            }
            Some(_) => return Err(bad()),
        };
        if prefix > max {
            return Err(format!("the prefix of \"{s}\" is longer than {max} bits"));
        }
        let network = mask(addr, prefix);
        if network != addr {
            return Err(format!(
                "\"{s}\" has host bits set: write the network \"{network}/{prefix}\" or the one address \"{}\"",
                Cidr::host(addr)
            ));
        }
        Ok(Cidr { addr, prefix })
    }
}

/// `addr` with every bit after the first `prefix` cleared.
fn mask(addr: IpAddr, prefix: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => {
            let bits = u32::from(a);
            let m = if prefix == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(prefix))
            };
            IpAddr::V4((bits & m).into())
        }
        IpAddr::V6(a) => {
            let bits = u128::from(a);
            let m = if prefix == 0 {
                0
            } else {
                u128::MAX << (128 - u32::from(prefix))
            };
            IpAddr::V6((bits & m).into())
        }
    }
}

/// Where the ingress addresses of a managed firewall came from (for logs and messages).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceOrigin {
    /// `provider.firewall_sources`.
    Configured,
    /// The IP of `gateway.node_address`.
    NodeAddress,
    /// What `gateway.public_url`'s host resolves to.
    PublicUrl,
}

impl fmt::Display for SourceOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SourceOrigin::Configured => "provider.firewall_sources",
            SourceOrigin::NodeAddress => "gateway.node_address",
            SourceOrigin::PublicUrl => "gateway.public_url",
        })
    }
}

impl Config {
    /// The networks a `firewall = "auto"` firewall lets in: `provider.firewall_sources`;
    /// else the IP of `gateway.node_address`; else every address `gateway.public_url`'s
    /// host resolves to (a DNS lookup, blocking). An error says to set
    /// `provider.firewall_sources`.
    pub fn firewall_sources(&self) -> Result<(Vec<Cidr>, SourceOrigin), String> {
        let set_it = "set provider.firewall_sources to the address(es) the ingress connects \
                      to nodes from, e.g. firewall_sources = [\"203.0.113.7/32\"]";
        if let Some(s) = &self.provider.firewall_sources {
            return Ok((s.clone(), SourceOrigin::Configured));
        }
        if let Some(a) = &self.gateway.node_address {
            let ip = a
                .parse::<std::net::SocketAddr>()
                .map_err(|_| format!("gateway.node_address \"{a}\" is not IP:port; {set_it}"))?
                .ip();
            return Ok((vec![Cidr::host(ip)], SourceOrigin::NodeAddress));
        }
        let Some(url) = &self.gateway.public_url else {
            return Err(format!(
                "provider.firewall = \"auto\" needs the ingress's address and neither \
                 gateway.node_address nor gateway.public_url gives it: {set_it}"
            ));
        };
        let host = url_host(url).ok_or_else(|| {
            format!("gateway.public_url \"{url}\" has no host to resolve; {set_it}")
        })?;
        let ips: Vec<IpAddr> = match host.parse::<IpAddr>() {
            Ok(ip) => vec![ip],
            Err(_) => (host.as_str(), 443)
                .to_socket_addrs()
                .map_err(|e| {
                    format!(
                        "cannot resolve gateway.public_url's host {host} ({e}) for the \
                         firewall = \"auto\" rules; {set_it}"
                    )
                })?
                .map(|a| a.ip())
                .collect(),
        };
        let mut out: Vec<Cidr> = ips
            .into_iter()
            .filter(|ip| !ip.is_loopback() && !ip.is_unspecified())
            .map(Cidr::host)
            .collect();
        out.sort();
        out.dedup();
        if out.is_empty() {
            return Err(format!(
                "gateway.public_url's host {host} resolves to no address a node could see \
                 the ingress come from; {set_it}"
            ));
        }
        Ok((out, SourceOrigin::PublicUrl))
    }
}

/// The host of an `http(s)://HOST[:PORT]/…` URL, without brackets around IPv6.
fn url_host(url: &str) -> Option<String> {
    let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
    let authority = rest.split(['/', '?', '#']).next()?;
    let authority = authority.rsplit('@').next()?;
    let host = if let Some(v6) = authority.strip_prefix('[') {
        v6.split(']').next()?
    } else {
        authority.split(':').next()?
    };
    (!host.is_empty()).then(|| host.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs_parse_normalise_and_refuse_host_bits() {
        let c: Cidr = "203.0.113.7/32".parse().unwrap();
        assert_eq!(c.to_string(), "203.0.113.7/32");
        assert_eq!("203.0.113.7".parse::<Cidr>().unwrap(), c);
        assert_eq!(
            "2001:db8::1".parse::<Cidr>().unwrap().to_string(),
            "2001:db8::1/128"
        );
        assert_eq!(
            "2001:db8::/64".parse::<Cidr>().unwrap().to_string(),
            "2001:db8::/64"
        );
        assert_eq!("0.0.0.0/0".parse::<Cidr>().unwrap().prefix(), 0);
        let e = "203.0.113.7/24".parse::<Cidr>().unwrap_err();
        assert!(
            e.contains("203.0.113.0/24") && e.contains("203.0.113.7/32"),
            "{e}"
        );
        for bad in [
            "",
            "/32",
            "1.2.3.4/33",
            "1.2.3.4/",
            "1.2.3.4/+1",
            "x/8",
            "::/129",
            "1.2.3/8",
        ] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn url_hosts() {
        assert_eq!(
            url_host("https://llm.example.org").as_deref(),
            Some("llm.example.org")
        );
        assert_eq!(url_host("https://a.b:8443/x").as_deref(), Some("a.b"));
        assert_eq!(
            url_host("https://[2001:db8::1]:443/").as_deref(),
            Some("2001:db8::1")
        );
        assert_eq!(url_host("https://"), None);
    }
}
