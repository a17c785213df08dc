//! Where a replica lives on a clustered standby: the member that already holds it, or for a
//! new one the member or group the user asked for, else the member of the source's own name,
//! else the cluster's own choice.

/// The user's choice for new replicas (`--target`, `--target-group`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Placement {
    /// The source's own member name when the standby has a member of that name, else the
    /// standby cluster's scheduler.
    #[default]
    Auto,
    /// This member.
    Member(String),
    /// A member of this cluster group, chosen by the standby's scheduler.
    Group(String),
}

/// Incus's `?target=` for one transfer (`None`: no target, the server decides; always the
/// case on a single server).
///
/// - `replica_member`: the member that holds the existing replica, for a refresh. A refresh
///   runs there whatever was asked: a replica is never moved by a push.
/// - `source_member`: the member that holds the source instance.
/// - `standby_members`: the standby's member names (empty: a single server).
pub fn target(
    placement: &Placement,
    replica_member: Option<&str>,
    source_member: Option<&str>,
    standby_members: &[String],
) -> Option<String> {
    if standby_members.is_empty() {
        return None;
    }
    if let Some(member) = replica_member {
        return Some(member.to_string());
    }
    match placement {
        Placement::Member(member) => Some(member.clone()),
        Placement::Group(group) => Some(format!("@{group}")),
        Placement::Auto => source_member
            .filter(|m| standby_members.iter().any(|s| s == m))
            .map(str::to_string),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members() -> Vec<String> {
        vec!["m1".to_string(), "m2".to_string()]
    }

    #[test]
    fn a_single_server_never_gets_a_target() {
        let asked = Placement::Member("m2".into());
        assert_eq!(target(&asked, Some("m1"), Some("m1"), &[]), None);
        assert_eq!(target(&Placement::Auto, None, Some("m1"), &[]), None);
    }

    #[test]
    fn a_refresh_runs_where_the_replica_lives_whatever_was_asked() {
        for asked in [
            Placement::Auto,
            Placement::Member("m1".into()),
            Placement::Group("second".into()),
        ] {
            assert_eq!(
                target(&asked, Some("m2"), Some("m1"), &members()),
                Some("m2".to_string())
            );
        }
    }

    #[test]
    fn a_new_replica_goes_where_asked() {
        let m = members();
        assert_eq!(
            target(&Placement::Member("m1".into()), None, Some("m2"), &m),
            Some("m1".to_string())
        );
        assert_eq!(
            target(&Placement::Group("second".into()), None, Some("m1"), &m),
            Some("@second".to_string())
        );
    }

    #[test]
    fn otherwise_the_member_of_the_same_name_or_the_scheduler() {
        let m = members();
        assert_eq!(
            target(&Placement::Auto, None, Some("m2"), &m),
            Some("m2".to_string())
        );
        assert_eq!(target(&Placement::Auto, None, Some("other"), &m), None);
        assert_eq!(target(&Placement::Auto, None, None, &m), None);
    }
}
