//! Parsing of the `http://host:port/path` URLs the tools are pointed at.

use std::net::{SocketAddr, ToSocketAddrs};

use anyhow::{bail, Context};

/// Where to send requests: a resolved address, the `Host` header value and a path.
#[derive(Debug, Clone)]
pub struct HttpTarget {
    pub addr: SocketAddr,
    /// `host:port` as written in the URL, for the `Host` header.
    pub authority: String,
    /// Path and query, starting with `/`.
    pub path: String,
}

impl HttpTarget {
    /// Parses a plain-HTTP URL; a missing path means `/`, a missing port means 80.
    pub fn parse(url: &str) -> anyhow::Result<HttpTarget> {
        let Some(rest) = url.strip_prefix("http://") else {
            bail!("{url}: only http:// URLs are supported");
        };
        let (authority, path) = match rest.find('/') {
            Some(slash) => (&rest[..slash], &rest[slash..]),
            None => (rest, "/"),
        };
        if authority.is_empty() {
            bail!("{url}: no host");
        }
        let with_port = if authority
            .rsplit_once(':')
            .is_some_and(|(_, p)| !p.contains(']'))
        {
            authority.to_owned()
        } else {
            format!("{authority}:80")
        };
        let addr = with_port
            .to_socket_addrs()
            .with_context(|| format!("resolving {with_port}"))?
            .next()
            .with_context(|| format!("{with_port} resolves to no address"))?;
        Ok(HttpTarget {
            addr,
            authority: authority.to_owned(),
            path: path.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_authority_and_path() {
        let t = HttpTarget::parse("http://127.0.0.1:8080/v1/prices/A?store=s").unwrap();
        assert_eq!(t.addr, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(t.authority, "127.0.0.1:8080");
        assert_eq!(t.path, "/v1/prices/A?store=s");
    }

    #[test]
    fn defaults_path_and_port() {
        let t = HttpTarget::parse("http://127.0.0.1").unwrap();
        assert_eq!(t.addr.port(), 80);
        assert_eq!(t.path, "/");
    }

    #[test]
    fn rejects_other_schemes() {
        assert!(HttpTarget::parse("https://127.0.0.1/").is_err());
    }
}
