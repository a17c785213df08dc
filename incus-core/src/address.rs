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

/// Why a command-line target was refused: one line that quotes the text as given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseError {
    /// The remote part (before `:`) is empty or holds a `/` or white space.
    #[error(
        "\"{text}\": expected [REMOTE:]INSTANCE or REMOTE: (remote names as in `incus remote list`)"
    )]
    Remote {
        /// The target as given.
        text: String,
    },
    /// The instance part breaks Incus's naming rule.
    #[error("\"{text}\": {reason}")]
    Instance {
        /// The target as given.
        text: String,
        /// Which rule it breaks.
        reason: NameError,
    },
    /// Something other than one non-empty name after the `/`.
    #[error("\"{text}\": the snapshot name after '/' must be one non-empty name")]
    Snapshot {
        /// The target as given.
        text: String,
    },
}

/// Which part of Incus's instance naming rule a name breaks (see [`check_instance_name`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NameError {
    #[error("the instance name is empty")]
    Empty,
    #[error("an instance name has at most 63 characters")]
    TooLong,
    #[error("an instance name has only letters, digits and dashes")]
    Character,
    #[error("an instance name starts with a letter and does not end with a dash")]
    Ends,
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
    pub fn parse(text: &str) -> Result<Self, ParseError> {
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
    pub fn parse(text: &str) -> Result<Self, ParseError> {
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
        check_instance_name(instance).map_err(|reason| ParseError::Instance {
            text: text.to_string(),
            reason,
        })?;
        if let Some(snapshot) = snapshot
            && (snapshot.is_empty() || snapshot.contains('/'))
        {
            return Err(ParseError::Snapshot {
                text: text.to_string(),
            });
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

fn check_remote(remote: &str, text: &str) -> Result<(), ParseError> {
    if remote.is_empty() || remote.contains('/') || remote.chars().any(char::is_whitespace) {
        return Err(ParseError::Remote {
            text: text.to_string(),
        });
    }
    Ok(())
}

/// Incus's rule for instance names: 1 to 63 letters, digits and dashes, not starting with a
/// digit or a dash, not ending with a dash.
pub fn check_instance_name(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.len() > 63 {
        return Err(NameError::TooLong);
    }
    if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
        return Err(NameError::Character);
    }
    if name.starts_with('-')
        || name.starts_with(|c: char| c.is_ascii_digit())
        || name.ends_with('-')
    {
        return Err(NameError::Ends);
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

    #[test]
    fn refusals_read_as_before() {
        for (bad, message) in [
            (
                ":web",
                "\":web\": expected [REMOTE:]INSTANCE or REMOTE: (remote names as in `incus remote list`)",
            ),
            (
                "a b:",
                "\"a b:\": expected [REMOTE:]INSTANCE or REMOTE: (remote names as in `incus remote list`)",
            ),
            ("s:/snap", "\"s:/snap\": the instance name is empty"),
            ("", "\"\": the instance name is empty"),
            (
                &"x".repeat(64),
                &format!(
                    "\"{}\": an instance name has at most 63 characters",
                    "x".repeat(64)
                ),
            ),
            (
                "we b",
                "\"we b\": an instance name has only letters, digits and dashes",
            ),
            (
                "1web",
                "\"1web\": an instance name starts with a letter and does not end with a dash",
            ),
            (
                "s:web/",
                "\"s:web/\": the snapshot name after '/' must be one non-empty name",
            ),
            (
                "web/a/b",
                "\"web/a/b\": the snapshot name after '/' must be one non-empty name",
            ),
        ] {
            let err = Target::parse(bad).expect_err(bad);
            assert_eq!(err.to_string(), message, "{bad}");
        }
        assert_eq!(
            Target::parse("s:-x"),
            Err(ParseError::Instance {
                text: "s:-x".into(),
                reason: NameError::Ends
            })
        );
    }
}
