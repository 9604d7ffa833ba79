//! The strict patterns every value passes before it reaches an argv, a URL
//! or a request body. They reject whitespace, quotes, shell metacharacters,
//! path separators and a leading '-' (which a program would read as an
//! option), so a value is one plain word wherever it lands.

/// Names of flows, steps, parameters and inventory hosts.
pub fn is_safe_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 64
        && b[0].is_ascii_alphanumeric()
        && b.iter()
            .all(|&c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
}

/// Check a parameter value; the error says which character is refused.
pub fn check_value(v: &str) -> Result<(), String> {
    if v.is_empty() {
        return Err("is empty".into());
    }
    if v.len() > 128 {
        return Err(format!("is {} bytes long (at most 128)", v.len()));
    }
    if let Some(c) = v.chars().find(|&c| !is_value_char(c)) {
        return Err(format!(
            "contains {c:?}: only letters, digits and . _ : @ + - are allowed"
        ));
    }
    if !v.as_bytes()[0].is_ascii_alphanumeric() {
        return Err("must start with a letter or digit".into());
    }
    Ok(())
}

fn is_value_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '@' | '+' | '-')
}

/// A host name or IP address to connect to.
pub fn is_address(s: &str) -> bool {
    if s.parse::<std::net::IpAddr>().is_ok() {
        return true;
    }
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 253
        && b[0].is_ascii_alphanumeric()
        && b.iter()
            .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'-' | b':'))
}

/// A login name on the remote host.
pub fn is_user(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 32
        && (b[0].is_ascii_lowercase() || b[0] == b'_')
        && b.iter().all(|&c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'_' | b'-' | b'.')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values() {
        for ok in [
            "web01",
            "web-01.example.jp",
            "nginx",
            "php8.2-fpm",
            "10.0.0.1",
            "a@b",
        ] {
            assert!(check_value(ok).is_ok(), "{ok}");
        }
        for bad in [
            "web01; rm -rf /",
            "web01'",
            "\"web01\"",
            "web01\nrm",
            "$(id)",
            "`id`",
            "a b",
            "-oProxyCommand=x",
            "../etc",
            "a|b",
            "a&b",
            "",
            "ｗｅｂ",
        ] {
            assert!(check_value(bad).is_err(), "{bad:?}");
        }
        assert!(check_value(&"a".repeat(129)).is_err());
    }

    #[test]
    fn names_addresses_users() {
        assert!(is_safe_name("restart-service"));
        assert!(!is_safe_name("-x"));
        assert!(!is_safe_name("a.b"));
        assert!(is_address("192.0.2.1"));
        assert!(is_address("::1"));
        assert!(!is_address("-oProxy"));
        assert!(!is_address("a b"));
        assert!(is_user("callout"));
        assert!(!is_user("root;id"));
        assert!(!is_user("-l"));
    }
}
