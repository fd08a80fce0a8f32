//! Where a request really came from: over HTTPS or not, and from which client address. The
//! connection says it, unless it comes from a proxy the site trusts (`trusted_proxies`), whose
//! `X-Forwarded-Proto` and `X-Forwarded-For` then say it; from anyone else those headers are
//! ignored. A session cookie set over HTTPS is marked `Secure`.

use axum::http::{header, HeaderMap, HeaderValue};
use std::net::IpAddr;

/// A request's origin.
#[derive(Debug, Clone, Copy)]
pub struct Origin {
    /// It came over HTTPS (to this server, or to a trusted proxy in front of it).
    pub https: bool,
    /// The client's address.
    pub client: IpAddr,
}

/// Whether `ip` is one of `trusted` (addresses or CIDR ranges, as `site_config.json` gives them).
fn trusted(trusted: &[String], ip: IpAddr) -> bool {
    trusted.iter().any(|t| {
        let t = t.trim();
        match t.parse::<ipnet::IpNet>() {
            Ok(net) => net.contains(&ip),
            Err(_) => t.parse::<IpAddr>().is_ok_and(|a| a == ip),
        }
    })
}

impl Origin {
    /// The origin of a request that reached this server from `peer`, over TLS or not.
    pub fn of(tls: bool, peer: IpAddr, headers: &HeaderMap, trusted_proxies: &[String]) -> Origin {
        let mut origin = Origin {
            https: tls,
            client: peer,
        };
        if !trusted(trusted_proxies, peer) {
            return origin;
        }
        let forwarded_proto = headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .map(|v| v.trim().to_ascii_lowercase());
        if let Some(proto) = forwarded_proto {
            origin.https = proto == "https";
        }
        // The client is the rightmost address that is not a trusted proxy: the ones to its
        // left were written by the client itself and prove nothing.
        let chain: Vec<IpAddr> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|a| a.trim().parse().ok())
            .collect();
        if let Some(client) = chain.iter().rev().find(|a| !trusted(trusted_proxies, **a)) {
            origin.client = *client;
        } else if let Some(first) = chain.first() {
            origin.client = *first;
        }
        origin
    }

    /// Marks every cookie the answer sets `Secure` when the request came over HTTPS.
    pub fn secure_cookies(&self, headers: &mut HeaderMap) {
        if !self.https {
            return;
        }
        let cookies: Vec<HeaderValue> = headers
            .get_all(header::SET_COOKIE)
            .iter()
            .map(|v| {
                let text = v.to_str().unwrap_or("");
                if text.to_ascii_lowercase().contains("; secure") {
                    return v.clone();
                }
                HeaderValue::from_str(&format!("{text}; Secure")).unwrap_or_else(|_| v.clone())
            })
            .collect();
        if cookies.is_empty() {
            return;
        }
        headers.remove(header::SET_COOKIE);
        for c in cookies {
            headers.append(header::SET_COOKIE, c);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn forwarded_headers_count_only_from_a_trusted_proxy() {
        let proxies = vec!["10.0.0.0/8".to_string(), "127.0.0.1".to_string()];
        let h = headers(&[
            ("x-forwarded-proto", "https"),
            ("x-forwarded-for", "1.2.3.4, 10.1.1.1"),
        ]);
        let via_proxy = Origin::of(false, "127.0.0.1".parse().unwrap(), &h, &proxies);
        assert!(via_proxy.https);
        assert_eq!(via_proxy.client, "1.2.3.4".parse::<IpAddr>().unwrap());
        let direct = Origin::of(false, "192.168.1.5".parse().unwrap(), &h, &proxies);
        assert!(!direct.https);
        assert_eq!(direct.client, "192.168.1.5".parse::<IpAddr>().unwrap());
        // A client cannot put itself on the list by writing the header.
        let spoofed = headers(&[("x-forwarded-for", "9.9.9.9, 5.6.7.8")]);
        let o = Origin::of(true, "127.0.0.1".parse().unwrap(), &spoofed, &proxies);
        assert_eq!(o.client, "5.6.7.8".parse::<IpAddr>().unwrap());
        assert!(o.https, "TLS to this server stays HTTPS");
    }

    #[test]
    fn cookies_over_https_are_secure() {
        let mut h = headers(&[
            ("set-cookie", "sid=abc; Path=/; HttpOnly"),
            ("set-cookie", "user_id=x; Path=/; Secure"),
        ]);
        let o = Origin {
            https: true,
            client: "127.0.0.1".parse().unwrap(),
        };
        o.secure_cookies(&mut h);
        let all: Vec<&str> = h
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect();
        assert_eq!(
            all,
            [
                "sid=abc; Path=/; HttpOnly; Secure",
                "user_id=x; Path=/; Secure"
            ]
        );
    }
}
