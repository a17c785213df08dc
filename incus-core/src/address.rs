//! Addresses as the `incus` CLI writes them: `[REMOTE:]INSTANCE[/SNAPSHOT]`, or `REMOTE:` alone
//! for "every instance there".

use std::fmt;

/// The name of a remote in the CLI's `config.yml` (`local` always exists).
pub type RemoteName = String;

/// A target on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// One instance (the remote may be implied).
    Instance(InstanceAddress),
    /// `REMOTE:`: every instance on that remote.
    Remote(RemoteName),
}

/// `[REMOTE:]INSTANCE[/SNAPSHOT]`; `remote` is `None` when the default remote is meant.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InstanceAddress {
    pub remote: Option<RemoteName>,
    pub instance: String,
    pub snapshot: Option<String>,
}

impl Target {
    /// Parses a command-line target. Errors say what is wrong with the text.
    pub fn parse(text: &str) -> Result<Self, String> {
        if let Some(remote) = text.strip_suffix(':')
            && !remote.contains(':')
        {
            check_remote(remote, text)?;
            return Ok(Target::Remote(remote.to_string()));
        }
        InstanceAddress::parse(text).map(Target::Instance)
    }
}

impl InstanceAddress {
    /// Parses `[REMOTE:]INSTANCE[/SNAPSHOT]`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let (remote, rest) = match text.split_once(':') {
            Some((remote, rest)) => {
                check_remote(remote, text)?;
                (Some(remote.to_string()), rest)
            }
            None => (None, text),
        };
        let (instance, snapshot) = match rest.split_once('/') {
            Some((i, s)) => (i, Some(s)),
            None => (rest, None),
        };
        check_instance_name(instance).map_err(|why| format!("\"{text}\": {why}"))?;
        if let Some(snapshot) = snapshot
            && (snapshot.is_empty() || snapshot.contains('/'))
        {
            return Err(format!(
                "\"{text}\": the snapshot name after '/' must be one non-empty name"
            ));
        }
        Ok(InstanceAddress {
            remote,
            instance: instance.to_string(),
            snapshot: snapshot.map(str::to_string),
        })
    }
}

impl fmt::Display for InstanceAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(remote) = &self.remote {
            write!(f, "{remote}:")?;
        }
        write!(f, "{}", self.instance)?;
        if let Some(snapshot) = &self.snapshot {
            write!(f, "/{snapshot}")?;
        }
        Ok(())
    }
}

fn check_remote(remote: &str, text: &str) -> Result<(), String> {
    if remote.is_empty() || remote.contains('/') || remote.chars().any(char::is_whitespace) {
        return Err(format!(
            "\"{text}\": expected [REMOTE:]INSTANCE or REMOTE: (remote names as in `incus remote list`)"
        ));
    }
    Ok(())
}

/// Incus's rule for instance names: 1 to 63 letters, digits and dashes, not starting with a
/// digit or a dash, not ending with a dash.
pub fn check_instance_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("the instance name is empty".into());
    }
    if name.len() > 63 {
        return Err("an instance name has at most 63 characters".into());
    }
    if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
        return Err("an instance name has only letters, digits and dashes".into());
    }
    if name.starts_with('-')
        || name.starts_with(|c: char| c.is_ascii_digit())
        || name.ends_with('-')
    {
        return Err("an instance name starts with a letter and does not end with a dash".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse_like_the_cli() {
        assert_eq!(
            Target::parse("standby:"),
            Ok(Target::Remote("standby".into()))
        );
        let Ok(Target::Instance(a)) = Target::parse("web") else {
            panic!("web")
        };
        assert_eq!(
            (a.remote, a.instance.as_str(), a.snapshot),
            (None, "web", None)
        );
        let Ok(Target::Instance(a)) = Target::parse("standby:web/snap1") else {
            panic!("standby:web/snap1")
        };
        assert_eq!(a.remote.as_deref(), Some("standby"));
        assert_eq!(a.snapshot.as_deref(), Some("snap1"));
        assert_eq!(a.to_string(), "standby:web/snap1");
    }

    #[test]
    fn bad_names_are_refused_with_a_reason() {
        for bad in [
            "", ":web", "we b", "1web", "web-", "a:b:c", "web/", "web/a/b",
        ] {
            assert!(Target::parse(bad).is_err(), "{bad}");
        }
    }
}
