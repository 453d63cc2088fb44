//! The gateway's `/metrics` counters (Prometheus text format) that tell how many store
//! operations shared how many durable commits.

pub const OPERATIONS: &str = "tillgate_store_operations_total";
pub const COMMITS: &str = "tillgate_store_commits_total";

/// The value of an unlabelled counter `name`, when present as a whole number.
pub fn counter(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .map(str::trim)
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let mut words = line.split_ascii_whitespace();
            if words.next()? != name {
                return None;
            }
            let value = words.next()?;
            // Prometheus allows floats; the gateway writes integers, and "12.0" is accepted.
            let whole = value.strip_suffix(".0").unwrap_or(value);
            whole.parse().ok()
        })
}

/// Store operations and durable commits at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Commits {
    pub operations: u64,
    pub commits: u64,
}

impl Commits {
    pub fn parse(text: &str) -> Option<Commits> {
        Some(Commits {
            operations: counter(text, OPERATIONS)?,
            commits: counter(text, COMMITS)?,
        })
    }

    /// Operations and commits made between `self` and the later `after`.
    pub fn delta(self, after: Commits) -> Commits {
        Commits {
            operations: after.operations.saturating_sub(self.operations),
            commits: after.commits.saturating_sub(self.commits),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# HELP tillgate_store_operations_total Write operations committed.\n\
        # TYPE tillgate_store_operations_total counter\n\
        tillgate_store_operations_total 1234\n\
        # HELP tillgate_store_commits_total Durable commits (one fsync each on SQLite).\n\
        # TYPE tillgate_store_commits_total counter\n\
        tillgate_store_commits_total 56\n";

    #[test]
    fn both_counters_are_read() {
        assert_eq!(
            Commits::parse(TEXT),
            Some(Commits {
                operations: 1234,
                commits: 56
            })
        );
    }

    #[test]
    fn comments_prefixes_and_missing_counters() {
        assert_eq!(counter(TEXT, "tillgate_store_operations"), None);
        assert_eq!(counter("# tillgate_store_commits_total 5\n", COMMITS), None);
        assert_eq!(
            counter("tillgate_store_commits_total 7.0\n", COMMITS),
            Some(7)
        );
        assert_eq!(Commits::parse("tillgate_store_commits_total 7\n"), None);
    }

    #[test]
    fn deltas_never_underflow() {
        let a = Commits {
            operations: 10,
            commits: 2,
        };
        let b = Commits {
            operations: 74,
            commits: 6,
        };
        assert_eq!(
            a.delta(b),
            Commits {
                operations: 64,
                commits: 4
            }
        );
        assert_eq!(b.delta(a), Commits::default());
    }
}
