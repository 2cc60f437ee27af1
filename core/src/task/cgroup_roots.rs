//! CRIU's `--cgroup-root [CONTROLLER:]PATH`: where a restore puts the processes' cgroups.
//!
//! ```text
//! dump     --cgroup-root name=x:/prefix   every process is in /prefix or below in the
//!                                         hierarchies x names (refused otherwise); the
//!                                         root goes into the inventory
//! restore  --cgroup-root /newroot         in each hierarchy no other root names: a cgroup
//!                                         C below the old root O (the dump's root for the
//!                                         hierarchy, else the root process's cgroup) is
//!                                         made or joined at /newroot + (C - O)
//! ```
//!
//! A root names a hierarchy when its controller is one of the hierarchy's ("cpu" for
//! "cpu,cpuacct", "name=x" for a named one, "unified" for v2); a root without a controller
//! names every hierarchy no other root names.

use cryo_proto::image::CgroupRoot;

/// `[CONTROLLER:]PATH`, PATH absolute (from the hierarchy's root).
pub fn parse(text: &str) -> Result<CgroupRoot, String> {
    let (controller, path) = match text.split_once(':') {
        Some((controller, path)) => (controller, path),
        None => ("", text),
    };
    if !path.starts_with('/') || path.split('/').any(|p| p == "." || p == "..") {
        return Err(format!(
            "{text:?}: the cgroup root must be an absolute path from the hierarchy's root \
             ([CONTROLLER:]/PATH), without . or .."
        ));
    }
    Ok(CgroupRoot {
        controller: controller.to_owned(),
        path: normal(path),
    })
}

/// `path` without a trailing '/' (the root stays "/").
fn normal(path: &str) -> String {
    match path.trim_end_matches('/') {
        "" => "/".to_owned(),
        p => p.to_owned(),
    }
}

/// The root of `roots` for `hierarchy` ("cpu,cpuacct", "name=x", "" for v2): the one naming
/// one of its controllers, else the one naming none.
pub fn root_for<'a>(roots: &'a [CgroupRoot], hierarchy: &str) -> Option<&'a str> {
    let names = |c: &str| match hierarchy {
        "" => c == "unified",
        _ => c == hierarchy || hierarchy.split(',').any(|h| h == c),
    };
    roots
        .iter()
        .find(|r| !r.controller.is_empty() && names(&r.controller))
        .or_else(|| roots.iter().find(|r| r.controller.is_empty()))
        .map(|r| r.path.as_str())
}

/// Whether cgroup `path` is `root` or below it.
pub fn within(path: &str, root: &str) -> bool {
    let root = root.trim_end_matches('/');
    path == root
        || root.is_empty()
        || path
            .strip_prefix(root)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// Cgroup `path`, below `old`, moved below `new`; None when it is not below `old`.
pub fn moved(path: &str, old: &str, new: &str) -> Option<String> {
    if !within(path, old) {
        return None;
    }
    let rest = &path[old.trim_end_matches('/').len()..];
    Some(normal(&format!("{}{rest}", new.trim_end_matches('/'))))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root(controller: &str, path: &str) -> CgroupRoot {
        CgroupRoot {
            controller: controller.into(),
            path: path.into(),
        }
    }

    #[test]
    fn roots_are_read_as_criu_writes_them() {
        assert_eq!(parse("/newroot/").unwrap(), root("", "/newroot"));
        assert_eq!(
            parse("name=zdtmtst:/prefix").unwrap(),
            root("name=zdtmtst", "/prefix")
        );
        assert_eq!(parse("cpu:/").unwrap(), root("cpu", "/"));
        for bad in ["newroot", "cpu:newroot", "/a/../b", ""] {
            assert!(parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn a_root_naming_a_controller_wins_over_the_default() {
        let roots = [
            root("", "/new"),
            root("name=x", "/prefix"),
            root("cpu", "/c"),
        ];
        assert_eq!(root_for(&roots, "name=x"), Some("/prefix"));
        assert_eq!(root_for(&roots, "name=x.other"), Some("/new"));
        assert_eq!(root_for(&roots, "cpu,cpuacct"), Some("/c"));
        assert_eq!(root_for(&roots, ""), Some("/new"));
        assert_eq!(root_for(&roots[1..], "memory"), None);
        assert_eq!(root_for(&[root("unified", "/u")], ""), Some("/u"));
    }

    #[test]
    fn cgroups_move_from_below_the_old_root_only() {
        assert_eq!(
            moved("/prefix/old", "/prefix/old", "/new").as_deref(),
            Some("/new")
        );
        assert_eq!(moved("/a/b/c", "/a", "/n").as_deref(), Some("/n/b/c"));
        assert_eq!(moved("/a/b", "/", "/n").as_deref(), Some("/n/a/b"));
        assert_eq!(moved("/a", "/a", "/").as_deref(), Some("/"));
        assert_eq!(moved("/ab", "/a", "/n"), None);
        assert!(within("/a/b", "/a") && within("/a", "/") && !within("/ab", "/a"));
    }
}
